"""The mouse X-ray phantoms: counts that agree with the instance table, every abnormality reflected
in the IMPC truth, instances visible and inside their class, a recorded pose that undoes, seeds,
shifts, the dataset writer and the CLI."""

import math

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_impc_dl.cli import main
from napari_impc_dl.errors import InputError
from napari_impc_dl.synthetic.xray import (
    ABNORMALITIES, CLASSES, IMPC_PARAMETERS, INSTANCE_COLUMNS, TRUTH_COLUMNS, make_xray_phantom, write_xray_dataset,
)

S = 256  # small and quick; 512 is the default
CLS = {n: i for i, n in enumerate(CLASSES)}
REGION_PARAM = {"cervical": "IMPC_XRY_013_001", "thoracic": "IMPC_XRY_014_001", "lumbar": "IMPC_XRY_015_001", "sacral": "IMPC_XRY_016_001", "caudal": "IMPC_XRY_017_001"}


def _counts_from_table(ph):
    t = ph.table()
    v, r = t[t.kind == "vertebra"], t[t.kind == "rib"]
    out = {reg: int((v.region == reg).sum()) for reg in REGION_PARAM}
    out["ribs_left"], out["ribs_right"] = int((r.side == "left").sum()), int((r.side == "right").sum())
    return out


@pytest.mark.parametrize("view", ["dv", "lateral"])
def test_truth_counts_equal_the_instance_table_and_map(view):
    for seed in range(12):
        ph = make_xray_phantom(seed, view, S, p_abnormal=0.6)
        derived = _counts_from_table(ph)
        assert derived == {k: ph.counts[k] for k in derived}, seed
        for reg, pid in REGION_PARAM.items():
            assert ph.impc[pid] == derived[reg]
        assert ph.impc["IMPC_XRY_008_001"] == derived["ribs_right"] and ph.impc["IMPC_XRY_009_001"] == derived["ribs_left"]
        labels = sorted(o["label"] for o in ph.objects)
        assert labels == list(range(1, len(labels) + 1))
        assert set(np.unique(ph.instances)) - {0} == set(labels)  # every instance is in the map, nothing else
        assert set(ph.impc) == set(IMPC_PARAMETERS) and set(ph.impc_named) == set(IMPC_PARAMETERS.values())
        assert ph.normal == (not ph.abnormalities)


def test_default_mouse_is_a_normal_c57bl6n_when_p_abnormal_is_0():
    for seed in range(10):
        ph = make_xray_phantom(seed, "dv", S, p_abnormal=0)
        c = ph.counts
        assert (c["cervical"], c["thoracic"], c["lumbar"], c["sacral"], c["ribs_left"], c["ribs_right"]) == (7, 13, 6, 4, 13, 13)
        assert 26 <= c["caudal"] <= 31 and ph.normal and ph.abnormalities == ()
        assert [ph.impc[k] for k in ("IMPC_XRY_010_001", "IMPC_XRY_011_001", "IMPC_XRY_012_001")] == ["normal"] * 3
    assert all(not make_xray_phantom(s, "dv", S, p_abnormal=1).normal for s in range(6))


@pytest.mark.parametrize("name", [a for a in ABNORMALITIES if a != "caudal_count"])
def test_each_abnormality_appears_when_forced(name):
    ph = make_xray_phantom(5, "dv", S, abnormalities=[name])
    assert name in ph.abnormalities and not ph.normal
    t, imp = ph.table(), ph.impc
    if name == "rib_count_left":
        assert imp["IMPC_XRY_009_001"] in (12, 14) and imp["IMPC_XRY_008_001"] == 13
    elif name == "rib_count_right":
        assert imp["IMPC_XRY_008_001"] in (12, 14) and imp["IMPC_XRY_009_001"] == 13
    elif name == "rib_fusion":
        fused = t[t.fused_with > 0]
        assert imp["IMPC_XRY_011_001"] == "abnormal" and len(fused) == 2 and len(set(fused.side)) == 1
        a, b = fused.label.tolist()
        assert abs(int(fused.number.iloc[0]) - int(fused.number.iloc[1])) == 1 and set(fused.fused_with) == {a, b}
    elif name == "rib_shape":
        assert imp["IMPC_XRY_010_001"] == "abnormal" and set(t["shape"]) - {"normal"} <= {"kinked", "wavy"} and (t["shape"] != "normal").any()
    elif name.startswith("pelvis"):
        assert imp["IMPC_XRY_012_001"] == "abnormal"
    else:
        region = name.split("_")[0]
        alt = {"cervical": (6, 8), "thoracic": (12, 14), "lumbar": (5, 7), "sacral": (3, 5)}[region]
        assert imp[REGION_PARAM[region]] in alt and _counts_from_table(ph)[region] == imp[REGION_PARAM[region]]


def test_counts_can_be_set_outright_and_the_abnormalities_follow():
    ph = make_xray_phantom(2, "dv", S, counts={"ribs_left": 14}, abnormalities=[])
    assert ph.impc["IMPC_XRY_009_001"] == 14 and ph.impc["IMPC_XRY_008_001"] == 13 and ph.impc["IMPC_XRY_014_001"] == 13
    assert ph.abnormalities == ("rib_count_left",)
    extra = ph.table().query("kind == 'rib' and side == 'left' and number == 14").iloc[0]
    attached = ph.table().set_index("label").loc[int(extra.vertebra)]
    assert attached.region == "lumbar" and attached.number == 1  # the 14th rib sits on the first lumbar vertebra
    ph = make_xray_phantom(2, "lateral", S, counts={"cervical": 8, "thoracic": 12, "caudal": 24}, abnormalities=[])
    assert set(ph.abnormalities) == {"cervical_count", "thoracic_count", "rib_count_left", "rib_count_right", "caudal_count"}
    assert _counts_from_table(ph)["caudal"] == 24 and ph.counts["ribs_left"] == ph.counts["ribs_right"] == 12


@pytest.mark.parametrize("view", ["dv", "lateral"])
def test_every_instance_is_visible_and_inside_its_region_class(view):
    for seed in range(10):
        ph = make_xray_phantom(seed, view, S, p_abnormal=0.5)
        for o in ph.objects:
            m = ph.instances == o["label"]
            assert o["area_px"] == int(m.sum()) >= 1, (seed, o)
            assert (ph.regions[m] == CLS[o["region"]]).all(), (seed, o)
        assert not np.isin(ph.regions[ph.instances == 0], [CLS[r] for r in ("cervical", "thoracic", "lumbar", "sacral", "caudal")]).any()
        for cls in ("skull", "pelvis", "soft_tissue", "ribs"):
            assert (ph.regions == CLS[cls]).any(), (seed, cls)
    areas = [o["area_px"] for o in make_xray_phantom(1, view, 512).objects]
    assert np.median(areas) > 20 and min(areas) >= 3


def test_the_frame_keeps_the_skeleton_in_unless_asked_to_cut():
    spine = [CLS[c] for c in ("skull", "cervical", "thoracic", "lumbar", "sacral", "caudal", "ribs", "pelvis")]
    for seed in range(10):
        r = make_xray_phantom(seed, "dv", S).regions
        edge = np.concatenate([r[0], r[-1], r[:, 0], r[:, -1]])
        assert not np.isin(edge, spine).any(), seed
    cut = [make_xray_phantom(s, "dv", S, allow_cut=True) for s in range(10)]
    assert any(min(o["area_px"] for o in ph.objects) == 0 for ph in cut)  # some bone left the frame
    assert all(_counts_from_table(ph) == {k: ph.counts[k] for k in _counts_from_table(ph)} for ph in cut)  # counts stay the mouse's


def _undo(vec, ph):
    """A display vector (x right, y down) in the canonical frame: turn back by rotation_deg, then unmirror."""
    th = math.radians(ph.rotation_deg)
    x, y = vec
    x, y = x * math.cos(th) - y * math.sin(th), x * math.sin(th) + y * math.cos(th)
    return (-x if ph.flipped else x), y


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("view", ["dv", "lateral"])
def test_undoing_the_recorded_pose_brings_the_head_up(view):
    rots, flips = [], []
    for seed in range(12):
        ph = make_xray_phantom(seed, view, S)
        rots.append(ph.rotation_deg), flips.append(ph.flipped)
        x, y = _undo(_centroid(ph.regions == CLS["skull"]) - _centroid(ph.regions == CLS["pelvis"]), ph)
        assert y < 0 and abs(math.degrees(math.atan2(x, -y))) < 25, (seed, x, y)  # skull straight above the pelvis
        if view == "dv":  # the mouse's left ribs on the image's left once the mirror is undone
            t = ph.table()
            left = _centroid(np.isin(ph.instances, t[t.side == "left"].label))
            right = _centroid(np.isin(ph.instances, t[t.side == "right"].label))
            assert _undo(left - right, ph)[0] < 0, seed
    assert max(np.abs(rots)) > 90 and 0 < sum(flips) < 12
    ph = make_xray_phantom(0, view, S, rotation_range=0)
    assert ph.rotation_deg == 0


def test_deterministic_by_seed_and_one_mouse_in_both_views():
    a, b = make_xray_phantom(7, "dv", S), make_xray_phantom(7, "dv", S)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.regions, b.regions) and np.array_equal(a.instances, b.instances)
    assert a.objects == b.objects and a.impc == b.impc
    assert a.image.dtype == np.uint16 and a.regions.dtype == np.uint8 and a.instances.dtype == np.uint16 and a.image.shape == (S, S)
    assert not np.array_equal(a.image, make_xray_phantom(8, "dv", S).image)
    lat = make_xray_phantom(7, "lateral", S)
    assert (lat.counts, lat.sex, lat.weight_g, lat.abnormalities) == (a.counts, a.sex, a.weight_g, a.abnormalities)
    assert a.marker["kind"] in ("disc", "ruler", "none") and a.pixel_size_mm > 0


def test_bone_is_bright_soft_tissue_mid_grey_and_the_marker_bright():
    ph = make_xray_phantom(3, "dv", 512, rotation_range=0)
    im, r = ph.image.astype(float), ph.regions
    bg, soft = np.median(im[r == 0]), np.median(im[r == CLS["soft_tissue"]])
    bone = np.median(im[np.isin(r, [CLS["thoracic"], CLS["lumbar"]])])
    assert bg < soft < bone and soft - bg > 0.25 * (bone - bg)
    assert np.median(im[r == CLS["ribs"]]) > soft
    if ph.marker["kind"] == "disc":
        assert np.median(im[r == CLS["marker"]]) > bone


def test_shifts_change_what_they_say():
    lo, hi = make_xray_phantom(4, "dv", S), make_xray_phantom(4, "dv", S, exposure=1.5)
    assert hi.image.mean() > 1.3 * lo.image.mean() and np.array_equal(lo.regions, hi.regions)
    body = lambda ph: int(np.isin(ph.regions, [0, CLS["marker"]], invert=True).sum())  # noqa: E731
    thin, fat = (make_xray_phantom(4, "dv", S, rotation_range=0, body_scale=b) for b in (1.0, 1.4))
    assert body(fat) > 1.2 * body(thin) and fat.counts == thin.counts
    quiet, loud = (make_xray_phantom(4, "dv", S, noise=n) for n in (0.0, 3.0))
    bg = (quiet.regions[:, 1:] == 0) & (quiet.regions[:, :-1] == 0)
    grain = lambda ph: float(np.median(np.abs(np.diff(ph.image.astype(float), axis=1)[bg])))  # noqa: E731 (pixel to pixel)
    assert grain(loud) > 10 * max(grain(quiet), 1.0)
    assert all(abs(make_xray_phantom(s, "dv", S, rotation_range=20).rotation_deg) <= 20 for s in range(6))


def test_dataset_writer_and_tables(tmp_path):
    paths = write_xray_dataset(tmp_path, 2, size=S, seed=3, view="both", p_abnormal=0.5)
    assert [p.name for p in paths] == ["xray_3_0000_dv.tif", "xray_3_0000_lateral.tif", "xray_3_0001_dv.tif", "xray_3_0001_lateral.tif"]
    truth = pd.read_csv(tmp_path / "truth.csv")
    inst = pd.read_csv(tmp_path / "instances.csv")
    assert list(truth.columns) == list(TRUTH_COLUMNS) and list(inst.columns) == list(INSTANCE_COLUMNS)
    assert list(truth.image) == [p.stem for p in paths] and truth.specimen.nunique() == 2
    assert pd.read_csv(tmp_path / "classes.csv").name.tolist() == list(CLASSES)
    for row in truth.itertuples():
        img = tifffile.imread(tmp_path / "images" / f"{row.image}.tif")
        lab = tifffile.imread(tmp_path / "instances" / f"{row.image}.tif")
        reg = tifffile.imread(tmp_path / "regions" / f"{row.image}.tif")
        assert img.dtype == np.uint16 and reg.dtype == np.uint8 and lab.dtype == np.uint16 and img.shape == (S, S)
        mine = inst[inst.image == row.image]
        assert sorted(mine.label) == sorted(set(np.unique(lab)) - {0})
        ribs = mine[mine.kind == "rib"]
        assert (ribs.side == "left").sum() == row.IMPC_XRY_009_001 and (ribs.side == "right").sum() == row.IMPC_XRY_008_001
        assert (mine.region == "thoracic").sum() == row.IMPC_XRY_014_001 and (mine.region == "caudal").sum() == row.IMPC_XRY_017_001
        assert mine[mine.kind == "vertebra"].side.isna().all()
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.part"))


def test_cli_writes_the_folder_and_rejects_flags_of_other_kinds(tmp_path, capsys):
    out = tmp_path / "xr"
    assert main(["synth", "xray", "--n", "2", "--out", str(out), "--size", str(S), "--seed", "1", "--view", "lateral", "--exposure", "1.2", "--rotation-range", "0"]) == 0
    msg = capsys.readouterr().out.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith("wrote 2 X-ray images")
    truth = pd.read_csv(out / "truth.csv")
    assert list(truth.columns) == list(TRUTH_COLUMNS) and set(truth.view) == {"lateral"} and (truth.rotation_deg == 0).all()
    assert main(["synth", "nuclei", "--n", "1", "--out", str(tmp_path / "n"), "--view", "dv"]) == 2
    assert main(["synth", "xray", "--n", "1", "--out", str(tmp_path / "x"), "--density", "2"]) == 2
    assert main(["synth", "xray", "--n", "1", "--out", str(tmp_path / "y"), "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "--view applies to the xray dataset only" in err and "too small" in err


@pytest.mark.parametrize(
    "kw",
    [dict(view="top"), dict(size=64), dict(size="big"), dict(seed=-1), dict(exposure=0), dict(noise=-1), dict(body_scale=9),
     dict(rotation_range=200), dict(p_abnormal=1.5), dict(abnormalities=["extra_leg"]), dict(counts={"ribs_left": 20}),
     dict(counts={"legs": 4}), dict(counts={"cervical": 7.5}), dict(abnormalities=["pelvis_asymmetric", "pelvis_malformed"])],
)
def test_bad_arguments_give_one_clear_error(kw):
    args = {"seed": 0, "view": "dv", "size": S, **kw}
    with pytest.raises(InputError):
        make_xray_phantom(**args)
