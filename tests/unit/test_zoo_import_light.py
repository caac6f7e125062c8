"""The zoo modules import neither torch, bioimageio nor Qt until they are used."""

import subprocess
import sys

ZOO = [
    "napari_impc_dl.zoo",
    "napari_impc_dl.zoo.package",
    "napari_impc_dl.zoo.spec",
    "napari_impc_dl.zoo.processing",
    "napari_impc_dl.zoo.adapter",
    "napari_impc_dl.zoo.library",
    "napari_impc_dl.zoo.export",
    "napari_impc_dl.zoo.export_classifier",
    "napari_impc_dl.zoo.classifier",
    "napari_impc_dl.zoo.conformance.test",
]


def test_zoo_modules_import_light():
    code = "import sys\n" + "".join(f"import {m}\n" for m in ZOO) + "print('\\n'.join(sys.modules))"
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    heavy = {m for m in mods if m.split(".")[0] in {"torch", "bioimageio", "napari", "qtpy", "PyQt5", "PyQt6", "PySide6", "onnxruntime", "segmentation_models_pytorch"}}
    assert not heavy, sorted(heavy)[:10]
