"""Contact weights: the loss weight where touching objects meet (training.targets)."""

import numpy as np

from napari_impc_dl.training.targets import contact_weights


def test_weights_mark_only_where_two_objects_meet():
    lab = np.zeros((20, 30), np.int32)
    lab[5:15, 2:10] = 1
    lab[5:15, 10:18] = 2  # touches 1 along column 10
    lab[5:15, 24:28] = 3  # alone
    w = contact_weights(lab, 4.0, reach=1)
    assert set(np.unique(w)) == {1.0, 5.0}
    assert (w[5:15, 9:11] == 5.0).all()  # both sides of the contact
    assert (w[:, 20:] == 1.0).all() and (w[5:15, 3:8] == 1.0).all()  # a lone object and interiors are not weighted


def test_segmentation_loss_uses_the_weights():
    import torch

    from napari_impc_dl.training.tasks import SegmentationTask

    logits = torch.zeros(1, 2, 8, 8)
    t = torch.zeros(1, 3, 8, 8)
    t[:, 2] = 1.0
    plain = SegmentationTask.loss(logits, t[:, :2])
    assert torch.isclose(SegmentationTask.loss(logits, t), plain)  # uniform weights: the same loss
    t[:, 0, :, :4] = 1.0
    t[:, 2, :, :4] = 9.0  # errors on the weighted half count more
    logits2 = logits.clone()
    logits2[:, 0, :, 4:] = 5.0  # wrong on the unweighted half only
    assert SegmentationTask.loss(logits2, t) < SegmentationTask.loss(logits2, t[:, :2])
