"""Importing the package must stay instant (no torch, no napari) and the core must never need Qt."""

import subprocess
import sys

CORE = [
    "napari_impc_dl",
    "napari_impc_dl.api",
    "napari_impc_dl.cli",
    "napari_impc_dl.config",
    "napari_impc_dl.presets",
    "napari_impc_dl.errors",
    "napari_impc_dl.io",
    "napari_impc_dl.io.image",
    "napari_impc_dl.io.outputs",
    "napari_impc_dl.models.card",
    "napari_impc_dl.models.checkpoint",
    "napari_impc_dl.models.registry",
    "napari_impc_dl.inference.tiling",
    "napari_impc_dl.inference.engine",
    "napari_impc_dl.inference.instances",
    "napari_impc_dl.inference.runnable",
    "napari_impc_dl.measure.regions",
    "napari_impc_dl.measure.matching",
    "napari_impc_dl.measure.evaluate",
    "napari_impc_dl.synthetic",
    "napari_impc_dl.training.loop",
    "napari_impc_dl.training.targets",
    "napari_impc_dl.training.data",
    "napari_impc_dl.training.tasks",
    "napari_impc_dl.training.run",
    "napari_impc_dl.training.transfer",
    "napari_impc_dl.training.reports",
    "napari_impc_dl.training.augment",
    "napari_impc_dl.models.classifiers",
    "napari_impc_dl.classify.crops",
    "napari_impc_dl.classify.resize",
    "napari_impc_dl.classify.runnable",
    "napari_impc_dl.classify.predict",
    "napari_impc_dl.classify.files",
    "napari_impc_dl.classify.loading",
    "napari_impc_dl.inference.batches",
    "napari_impc_dl.measure.classes",
    "napari_impc_dl.synthetic.shapes",
    "napari_impc_dl.synthetic.views",
]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_package_import_pulls_no_torch_no_napari():
    mods = _modules_after("import napari_impc_dl")
    assert not {m for m in mods if m.split(".")[0] in {"torch", "napari", "qtpy", "PyQt5", "PyQt6", "PySide6", "magicgui", "zarr", "tifffile"}}


def test_cli_and_api_import_without_torch():
    mods = _modules_after("import napari_impc_dl.cli, napari_impc_dl.api")
    assert "torch" not in mods


def test_every_core_module_imports_without_qt():
    """Blocks Qt/napari imports outright, as napari's headless test env does by uninstalling Qt."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'superqt', 'vispy'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        + "".join(f"import {m}\n" for m in CORE)
    )
    subprocess.run([sys.executable, "-c", code], check=True)
