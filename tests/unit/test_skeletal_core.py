"""The skeletal workflow's logic on phantom truth (no models): pose, standard view, counting, IMPC tables."""

from __future__ import annotations

import numpy as np
import pytest

from napari_impc_dl.errors import InputError
from napari_impc_dl.skeletal import counting, impc
from napari_impc_dl.skeletal.pose import Pose, estimate_pose, standard_view
from napari_impc_dl.synthetic.xray import make_xray_phantom
from napari_impc_dl.synthetic.xray_layout import CLASSES, CLS


def _onehot(regions):
    return np.stack([(regions == k).astype(np.float32) for k in range(len(CLASSES))])


def _angle(a, b):
    return abs((a - b + 180) % 360 - 180)


@pytest.mark.parametrize("seed,view", [(1, "dv"), (2, "lateral"), (3, "dv"), (4, "lateral"), (5, "dv")])
def test_pose_from_the_class_map_finds_the_head(seed, view):
    ph = make_xray_phantom(seed, view, 384)
    pose = estimate_pose(ph.regions)
    assert _angle(pose.rotation_deg, ph.rotation_deg) < 6, (pose.rotation_deg, ph.rotation_deg)


def test_pose_maps_points_both_ways():
    pose = Pose(37.0, True, (100.0, 80.0))
    pts = np.array([[10.0, 20.0], [150.0, 3.0], [100.0, 80.0]])
    assert np.allclose(pose.to_picture(pose.to_standard(pts)), pts)
    assert np.allclose(pose.to_standard(pts[2:]), 0)


def test_standard_view_is_the_same_whatever_the_pose():
    """The same mouse turned and mirrored gives (nearly) the same head-up, un-mirrored picture."""
    views = []
    for rot in (0.0, 90.0, -135.0):
        ph = make_xray_phantom(11, "lateral", 384, rotation_range=0, noise=0)
        img, reg = ph.image.astype(np.float32), ph.regions
        k = int(rot // 90) % 4 if rot % 90 == 0 else None
        if k is not None:
            img, reg = np.rot90(img, k).copy(), np.rot90(reg, k).copy()
        else:  # mirror instead
            img, reg = img[:, ::-1].copy(), reg[:, ::-1].copy()
        pose = estimate_pose(reg)
        mirrored = k is None
        views.append(standard_view(img, Pose(pose.rotation_deg, mirrored, pose.center_yx), reg, 96))
    ref = views[0] / views[0].max()
    for v in views[1:]:
        v = v / v.max()
        assert np.corrcoef(ref.ravel(), v.ravel())[0, 1] > 0.9


def test_a_picture_without_skull_is_refused_with_one_line():
    regions = np.zeros((64, 64), np.uint8)
    regions[10:20, 10:20] = CLS["pelvis"]
    with pytest.raises(InputError, match="No skull"):
        estimate_pose(regions)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_counting_on_truth_gives_the_true_counts(seed):
    ph = make_xray_phantom(seed, "dv", 512, p_abnormal=1.0)
    table = counting.bone_table(ph.instances, _onehot(ph.regions))
    skull = np.argwhere(ph.regions == CLS["skull"]).mean(0)
    counting.spine_regions(table, skull)
    pose = estimate_pose(ph.regions)
    counting.rib_sides(table, Pose(pose.rotation_deg, ph.flipped, pose.center_yx), "dv")
    n, conf = counting.counts(table, "dv")
    visible = {o["label"] for o in ph.objects if o["area_px"] > 0}
    want = dict(ph.counts)
    assert len(visible) == len(ph.objects)  # the whole mouse is in view
    assert n == want, (n, want, ph.abnormalities)
    assert all(c == 1.0 for c in conf.values())


def test_lateral_ribs_have_no_side():
    ph = make_xray_phantom(5, "lateral", 384)
    table = counting.bone_table(ph.instances, _onehot(ph.regions))
    counting.rib_sides(table, estimate_pose(ph.regions), "lateral")
    n, conf = counting.counts(table, "lateral")
    assert n["ribs_left"] is None and n["ribs_right"] is None and conf["ribs_left"] == 0


def test_ordered_regions_never_go_backwards():
    p = np.full((8, 5), 0.01)
    seq = [0, 0, 1, 1, 0, 2, 3, 4]  # a cervical read in the middle of the thoracic run
    p[np.arange(8), seq] = 0.9
    p[4, 1] = 0.6  # ... where thoracic was a close second
    out = counting.ordered_regions(p)
    assert list(out) == [0, 0, 1, 1, 1, 2, 3, 4]
    assert np.all(np.diff(out) >= 0)


def test_chain_follows_a_curled_line():
    t = np.linspace(0, 3 * np.pi, 40)
    pts = np.stack([np.sin(t) * (10 + 3 * t), np.cos(t) * (10 + 3 * t)], 1)
    perm = np.random.default_rng(0).permutation(40)
    order = counting.chain(pts[perm], pts[0] + 1)
    assert list(perm[order]) == list(range(40))


def test_calls_and_mp_terms_against_the_reference():
    assert impc.call("ribs_left", 14) == "increased" and impc.mp_term("ribs_left", "increased")[0] == "MP:0000480"
    assert impc.call("ribs_right", 12) == "decreased" and impc.mp_term("ribs_right", "decreased")[0] == "MP:0003345"
    assert impc.call("caudal", 28) == "normal" and impc.call("caudal", 25) == "decreased"
    assert impc.reference_text("caudal") == "26-31"
    assert impc.mp_term("rib_shape", "abnormal")[0] == "MP:0000150"
    assert impc.mp_term("thoracic", "normal") == ("", "")


def test_long_and_wide_tables():
    import pandas as pd

    vals = {"ribs_left": 14, "ribs_right": 13, "cervical": 7, "thoracic": 13, "lumbar": 6, "sacral": 4, "caudal": 28,
            "rib_shape": "normal", "rib_fusion": "normal", "pelvis": "abnormal"}
    conf = {k: 0.9 for k in vals}
    rows = impc.long_rows("m1", "m1_dv", "dv", vals, conf, {"name": "skeletal", "hash": "abc"})
    lat = dict(vals, ribs_left=None, ribs_right=None, caudal=27)
    rows += impc.long_rows("m1", "m1_lateral", "lateral", lat, {**conf, "caudal": 0.95}, {"name": "skeletal", "hash": "abc"})
    long = pd.DataFrame(rows, columns=list(impc.LONG_COLUMNS))
    assert len(long) == 10 + 8  # a lateral view has no per-side rib rows
    assert set(long["parameter_stable_id"]) == set(impc.PARAMETER_KEYS)
    wide = impc.wide_table(long)
    assert len(wide) == 1
    r = wide.iloc[0]
    assert r["IMPC_XRY_009_001"] == 14 and r["IMPC_XRY_009_001_call"] == "increased"
    assert r["IMPC_XRY_017_001"] == 27  # the more confident view's value
    assert r["n_deviations"] == 2 and "MP:0000480" in r["mp_terms"]
    assert impc.abnormal_score(vals, conf) == pytest.approx(0.9)
    assert impc.abnormal_score(dict(vals, ribs_left=13, pelvis="normal"), conf) == pytest.approx(0.1)


@pytest.mark.parametrize("seed", [31, 32, 33, 34])
def test_rib_sides_follow_the_mouse_not_the_picture(seed):
    """An extra rib on the mouse's left is counted on the left whether or not the picture is mirrored."""
    ph = make_xray_phantom(seed, "dv", 512, counts={"ribs_left": 14, "ribs_right": 13})
    table = counting.bone_table(ph.instances, _onehot(ph.regions))
    pose = estimate_pose(ph.regions)
    counting.rib_sides(table, Pose(pose.rotation_deg, ph.flipped, pose.center_yx), "dv")
    n, _ = counting.counts(table, "dv")
    assert (n["ribs_left"], n["ribs_right"]) == (14, 13), ph.flipped


def test_ribs_pull_their_vertebrae_into_the_thoracic_region():
    """A regions map that calls T1 cervical (a close call) is put right by the ribs that start at T1."""
    ph = make_xray_phantom(41, "dv", 512, p_abnormal=0.0)
    probs = _onehot(ph.regions)
    t1 = next(o["label"] for o in ph.objects if o["kind"] == "vertebra" and o["region"] == "thoracic" and o["number"] == 1)
    m = ph.instances == t1
    probs[CLS["cervical"]][m], probs[CLS["thoracic"]][m] = 0.55, 0.45
    skull = np.argwhere(ph.regions == CLS["skull"]).mean(0)
    for ribs_at, want in ((None, (8, 12)), ("ribs", (7, 13))):
        table = counting.bone_table(ph.instances, probs)
        counting.spine_regions(table, skull, counting.rib_attachments(ph.instances, table) if ribs_at else None)
        counting.rib_sides(table, Pose(ph.rotation_deg, ph.flipped, tuple(skull)), "dv")
        n, _ = counting.counts(table, "dv")
        assert (n["cervical"], n["thoracic"]) == want


@pytest.mark.parametrize("seed", [51, 52, 53])
def test_ribs_are_counted_by_their_heads_although_they_overlap(seed):
    """On the phantoms' true masks the ribs of one side touch out in the rib cage, yet their heads count them."""
    from scipy import ndimage as ndi

    ph = make_xray_phantom(seed, "dv", 512, counts={"ribs_left": 14, "ribs_right": 13})
    rib_px = np.isin(ph.instances, [o["label"] for o in ph.objects if o["kind"] == "rib"])
    assert ndi.label(rib_px)[1] < 20  # the rib pixels alone do not give 27 pieces
    probs = _onehot(ph.regions)
    table = counting.bone_table(ph.instances, probs)
    pose = estimate_pose(ph.regions)
    n, conf = counting.rib_heads(ph.instances, table, probs, Pose(pose.rotation_deg, ph.flipped, pose.center_yx))
    assert abs(n["ribs_left"] - 14) <= 1 and abs(n["ribs_right"] - 13) <= 1
    assert 0 < conf["ribs_left"] <= 1
