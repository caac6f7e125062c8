"""DICOM files for tests, written by pydicom (what a scanner's export looks like, minus the patient data)."""

from __future__ import annotations

import numpy as np


def write_dicom(path, pixels=None, *, photometric="MONOCHROME2", spacing=(0.05, 0.05), imager_spacing=None, with_pixels=True):
    """A minimal DX (digital X-ray) DICOM file written by pydicom."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "mouse-1"
    if with_pixels:
        pixels = np.asarray(pixels, np.uint16)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
    if spacing is not None:
        ds.PixelSpacing = [str(s) for s in spacing]
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = [str(s) for s in imager_spacing]
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path
