"""Input and output of images.

:func:`open_image` opens TIFF / OME-TIFF, ``.zarr`` / OME-Zarr, ``.npy`` and PNG/JPEG/BMP inputs
lazily as an :class:`ImageSource`, which reads windows of one plane at a time, so images of any
size can be processed in bounded memory.
"""

from .image import ImageSource, open_image

__all__ = ["ImageSource", "open_image"]
