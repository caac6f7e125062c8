"""napari widgets: the only package (with ``_reader``, ``_writer``, ``_sample_data``) that imports napari / Qt.

One widget per module (``segment_widget``, ``export_widget``); ``_workers`` runs core calls off the
GUI thread with a progress bar in napari's activity dock and a cancel token. Widgets hold no
segmentation logic: they gather parameters, call :mod:`napari_impc_dl.api` in a worker, and turn
what it returns into layers.
"""

import sys as _sys


def avoid_llvm_clash() -> bool:
    """Keep torch from importing ``triton`` when Mesa's LLVM is already loaded; return True when it did.

    napari's OpenGL canvas on Mesa (software rendering, Intel/AMD graphics, virtual machines) loads
    ``libLLVM``; triton's own LLVM then clashes with it and the process crashes (segfault) the
    moment triton is imported, which torch does on its first use of ``torch._dynamo`` (e.g. when
    segmentation-models-pytorch is imported). Our models never need triton (no ``torch.compile``),
    so in that situation it is marked unavailable (``sys.modules["triton"] = None``: torch then
    treats it as not installed). Nothing changes when triton is already imported or no LLVM is loaded.
    """
    if "triton" in _sys.modules or not _sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            clash = any("libLLVM" in line for line in f)
    except OSError:
        return False
    if clash:
        _sys.modules["triton"] = None  # type: ignore[assignment]
    return clash


avoid_llvm_clash()


def preload_torch_libraries() -> None:
    """Map torch's big shared libraries with the GIL released, before ``import torch`` (call in a worker).

    The first Run imports torch in a worker thread, but the interpreter holds the GIL while the
    dynamic loader maps and initialises libtorch (hundreds of MB): napari froze for up to a second.
    A ctypes call into libc's ``dlopen`` releases the GIL, so the GUI keeps running while the
    libraries load; the import that follows finds them loaded. (torch's own one-time C++ start-up,
    ``_initExtension``, still holds the GIL for a few hundred ms.) Linux only; does nothing when
    torch is already imported, and ignores every failure (the import then just does the work).
    """
    if "torch" in _sys.modules or not _sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import importlib.util
        import os

        spec = importlib.util.find_spec("torch")
        if spec is None or spec.origin is None:
            return
        lib = os.path.join(os.path.dirname(spec.origin), "lib")
        libc = ctypes.CDLL(None)
        libc.dlopen.restype, libc.dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
        # torch loads its global deps RTLD_GLOBAL itself; everything else stays local, as a plain import leaves it
        for name, flags in (("libtorch_global_deps.so", os.RTLD_GLOBAL), ("libtorch_python.so", os.RTLD_LOCAL)):
            path = os.path.join(lib, name)
            if os.path.exists(path):
                libc.dlopen(path.encode(), os.RTLD_NOW | flags)
    except Exception:  # noqa: BLE001 - an optimisation only
        return
