"""Which devices can run a model here, named for people: ``cuda:0 (NVIDIA H100 80GB HBM3)``, ``mps``, ``cpu``.

:func:`detect_devices` asks torch when torch is already imported (exact). Otherwise it avoids
importing torch (seconds of start-up a widget must not pay): it reads the NVIDIA driver's
``/proc/driver/nvidia/gpus/*/information`` (or ``nvidia-smi``) and the platform (Apple silicon for
MPS). Such a guess is marked ``confirmed=False``; whether torch can really use the GPU shows on the
first run (``SegmentationResult.timings["device"]``).
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Device:
    """One device a model can run on."""

    id: str
    """What ``SegmentConfig.device`` takes: ``cuda:0``, ``mps``, ``cpu``."""
    name: str
    """Human-readable name (the GPU's model for CUDA)."""
    confirmed: bool = True
    """True when torch reported it; False when only the driver / platform suggests it."""

    @property
    def label(self) -> str:
        return self.id if self.name in ("", self.id) else f"{self.id} ({self.name})"


def _from_torch() -> list[Device]:
    import torch

    found = [Device(f"cuda:{i}", torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append(Device("mps", "Apple GPU (MPS)"))
    return found


def _nvidia_names() -> list[str]:
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text(errors="replace").splitlines():
                if line.lower().startswith("model:"):
                    names.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    if names or not shutil.which("nvidia-smi"):
        return names
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=3, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def detect_devices(*, use_torch: bool | None = None) -> list[Device]:
    """Accelerators first (CUDA devices in index order, then MPS), the CPU last.

    ``use_torch``: ``None`` asks torch only when it is already imported; ``True`` imports it;
    ``False`` never does.
    """
    if use_torch is None:
        use_torch = "torch" in sys.modules
    if use_torch:
        found = _from_torch()
    else:
        found = [Device(f"cuda:{i}", name, confirmed=False) for i, name in enumerate(_nvidia_names())]
        if sys.platform == "darwin" and platform.machine() == "arm64":
            found.append(Device("mps", "Apple GPU (MPS)", confirmed=False))
    return [*found, Device("cpu", "CPU")]


def native_bf16(device=None) -> bool:
    """True when the CUDA device computes bf16 in hardware (Ampere and newer). ``torch.cuda.is_bf16_supported()``
    alone also says True where bf16 is only emulated (T4, V100, RTX 20xx), which is slower than fp16 there."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3
        return bool(torch.cuda.is_bf16_supported())


@contextlib.contextmanager
def exact_math():
    """Full fp32 precision inside (TF32 off for cuDNN convolutions and CUDA matmuls), restored after.

    The self-checks of the inference copies (BatchNorm folding, strip-wise decoder) compare outputs
    to 1e-4 / 1e-5; with TF32 (on by default for cuDNN on Ampere and newer) the reference itself
    is off by about 1e-3, and a correct copy would be rejected.
    """
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
