"""Synthetic images with exact ground truth, for training the starter models and for tests."""

from .nuclei import dataset_image_seed, make_nuclei_image, write_large_nuclei_zarr, write_nuclei_dataset
from .xray import XrayPhantom, make_xray_phantom, write_xray_dataset

__all__ = [
    "make_nuclei_image", "write_nuclei_dataset", "write_large_nuclei_zarr", "dataset_image_seed",
    "XrayPhantom", "make_xray_phantom", "write_xray_dataset",
]
