"""Acceptance figures of the bundled starter model and of seam-free tiling (uses the real model)."""

import json

import numpy as np

from napari_impc_dl import api
from napari_impc_dl.cli import main
from napari_impc_dl.config import SegmentConfig
from napari_impc_dl.inference.tiling import plan_tiles
from napari_impc_dl.measure.matching import match_instances


def test_f1_on_unseen_synthetic_images(tmp_path, capsys):
    """synth (a seed never used in training) -> segment -> evaluate: F1 at IoU 0.5 >= 0.90."""
    data, pred = tmp_path / "data", tmp_path / "pred"
    assert main(["synth", "nuclei", "--n", "20", "--out", str(data), "--seed", "7"]) == 0
    assert main(["segment", *map(str, sorted((data / "images").glob("*.tif"))), "--out", str(pred), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--truth", str(data / "masks")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_images"] == 20
    assert summary["f1_mean"] >= 0.90, summary
    assert (pred / "evaluation.csv").exists()


def test_tiled_labels_equal_whole_image_labels(starter, nuclei_768):
    """Small tiles (many borders) and small postprocessing blocks, with the model's own halo."""
    img, _ = nuclei_768
    whole = api.segment_image(img, starter, SegmentConfig(tile=1024, device="cpu"))
    assert whole.timings["tiles"] == 1
    tile = 256
    tiled = api.segment_image(img, starter, SegmentConfig(tile=tile, device="cpu", block=256, block_halo=96))
    assert tiled.timings["tiles"] >= 9
    # objects straddle every inner tile border
    plan = plan_tiles(img.shape, tile, starter.info.tiling.halo)
    lw = whole.labels
    for cut in sorted({t.cy0 for t in plan.tiles} - {0}):
        assert len(np.intersect1d(lw[cut - 1], lw[cut])[1:]) >= 1, f"no object crosses row {cut}"
    for cut in sorted({t.cx0 for t in plan.tiles} - {0}):
        assert len(np.intersect1d(lw[:, cut - 1], lw[:, cut])[1:]) >= 1, f"no object crosses column {cut}"
    assert tiled.n_objects == whole.n_objects
    m = match_instances(tiled.labels, whole.labels)
    assert m.tp == whole.n_objects
    assert min(iou for _, _, iou in m.matched) >= 0.99
