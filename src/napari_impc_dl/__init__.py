"""napari-impc-dl: deep learning for bioimages, by clicking (napari) or scripting (CLI / Python).

Importing this package is deliberately cheap: it imports neither torch nor napari, so napari's
plugin discovery stays instant. The public Python entry point is :mod:`napari_impc_dl.api`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
