"""napari-impc-dl: deep learning for bioimages, by clicking (napari) or scripting (CLI / Python).

Importing this package is deliberately cheap: it imports neither torch nor napari, so napari's
plugin discovery stays instant. The public Python entry point is :mod:`napari_impc_dl.api`.
It sets one environment variable, ``THP_MEM_ALLOC_ENABLE=1`` unless already set, so that torch
backs large CPU tensors with huge pages (:mod:`napari_impc_dl.inference.allocator`).
"""

import os as _os

__version__ = "0.1.0"

# huge pages for torch's large CPU tensors, before its first large allocation (see inference/allocator.py)
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__all__ = ["__version__"]
