"""The Segment widget in a real napari window: Run, relabel, Cancel, responsiveness, large zarr-backed images."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

pytestmark = pytest.mark.gui

PLUGIN = "napari-impc-dl"


def open_segment(viewer):
    from napari_impc_dl._qt.segment_widget import SegmentWidget

    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    assert isinstance(widget, SegmentWidget)
    return widget


def click(qtbot, button):
    assert button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.fixture
def tiny_checkpoint(tmp_path_factory, tiny_model):
    """The tiny random model as a checkpoint file (for plumbing tests; its labels are meaningless)."""
    from napari_impc_dl.models.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(tiny_model.net, tiny_model.card, path)
    return path


class Ticks:
    """Largest gap between the ticks of a 20 ms QTimer: how long the GUI event loop was blocked."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append(now - self._last - 0.020)
        self._last = now

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.stop()

    @property
    def worst(self) -> float:
        return max(self.gaps, default=0.0)


def test_widget_opens_with_choices(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = open_segment(viewer)
    viewer.open_sample(PLUGIN, "nuclei")
    assert widget.image_combo.currentText() == "sample_nuclei"
    assert [widget.image_combo.itemText(i) for i in range(widget.image_combo.count())] == ["sample_nuclei"]  # labels are not offered
    assert widget.model_combo.currentData() == "nuclei"
    assert "hash" in widget.model_info.text()
    devices = [widget.device_combo.itemData(i) for i in range(widget.device_combo.count())]
    assert devices[0] == "auto" and "cpu" in devices
    assert widget.detected.text().startswith("Detected:")
    assert not widget.advanced.isExpanded()
    assert widget.foreground.value() == pytest.approx(0.5, abs=0.2)


def test_run_counts_nuclei_relabels_and_stays_responsive(make_napari_viewer, qtbot, wait_idle, starter):
    """Click Run on the bundled sample: the count matches the ground truth, the GUI stays responsive,
    and moving a threshold re-runs only the postprocessing on the same layer."""
    from napari_impc_dl import api
    from napari_impc_dl.measure.matching import match_instances

    viewer = make_napari_viewer()
    widget = open_segment(viewer)
    viewer.open_sample(PLUGIN, "nuclei")
    truth = np.asarray(viewer.layers["sample_nuclei ground truth"].data)

    click(qtbot, widget.run_button)  # first run: loads the model
    assert widget.running and widget.cancel_button.isEnabled()
    wait_idle(widget, 180)
    layer = viewer.layers["sample_nuclei labels"]
    first = np.asarray(layer.data).copy()

    with Ticks() as ticks:  # second run, model cached: pure segmentation
        click(qtbot, widget.run_button)
        wait_idle(widget, 120)
    assert viewer.layers["sample_nuclei labels"] is layer, "a re-run replaces its own layer's data"
    print(f"max event-loop gap during a run: {ticks.worst * 1000:.0f} ms over {len(ticks.gaps)} ticks")
    assert ticks.worst < 0.200
    assert np.array_equal(np.asarray(layer.data), first)

    # the widget is a door into the same api: its defaults give exactly what segment_image gives
    image = np.asarray(viewer.layers["sample_nuclei"].data)
    assert np.array_equal(first, api.segment_image(image, starter, api.SegmentConfig(device="cpu")).labels)

    rec = layer.metadata["napari_impc_dl"]
    n = rec["n_objects"]
    n_true = int(truth.max())
    assert abs(n - n_true) <= 0.10 * n_true, (n, n_true)
    m = match_instances(np.asarray(layer.data), truth)
    assert m.f1 >= 0.8, m
    assert len(layer.features) == n == len(np.unique(first)) - 1
    assert set(layer.features["index"]) == set(np.unique(first)[1:])
    assert rec["model"]["name"] == "nuclei" and len(rec["model"]["hash"]) == 12
    assert rec["params"]["foreground_threshold"] == pytest.approx(widget.foreground.value())
    assert f"{n:,} objects" == widget.count.text()

    # postprocessing only: raise the foreground threshold -> fewer / smaller objects, same layer, quickly
    t0 = time.perf_counter()
    widget.foreground.setValue(0.9)
    qtbot.waitUntil(lambda: layer.metadata["napari_impc_dl"]["params"]["foreground_threshold"] == 0.9, timeout=20_000)
    wait_idle(widget)
    print(f"relabel after a threshold change: {time.perf_counter() - t0:.2f} s (incl. {widget._relabel_timer.interval()} ms settle)")
    rec = layer.metadata["napari_impc_dl"]
    assert np.count_nonzero(layer.data) < np.count_nonzero(first)
    assert len(layer.features) == rec["n_objects"] == len(np.unique(np.asarray(layer.data))) - 1
    assert widget.count.text() == f"{rec['n_objects']:,} objects"
    assert viewer.layers["sample_nuclei labels"] is layer


def test_diameter_and_objects_fields_reach_the_result_and_relabel(make_napari_viewer, qtbot, wait_idle):
    """Postprocessing's Diameter bounds the minimum size (and shows in the status); Objects: threshold re-runs
    only the postprocessing, without splitting touching nuclei."""
    viewer = make_napari_viewer()
    widget = open_segment(viewer)
    viewer.open_sample(PLUGIN, "nuclei")
    assert widget.diameter.value() == 0 and widget.diameter.text() == "auto"
    widget.diameter.setValue(40)
    click(qtbot, widget.run_button)
    wait_idle(widget, 180)
    layer = viewer.layers["sample_nuclei labels"]
    rec = layer.metadata["napari_impc_dl"]
    assert rec["params"]["diameter"] == 40 and rec["params"]["min_size"] == round(np.pi / 4 * 10**2)
    assert "diameter 40 px (given)" in widget.status.text()
    assert rec["params"]["merge_threshold"] == 0.25 and rec["params"]["merge_min_solidity"] == 0.98  # the nuclei card's convex merge
    assert "cut objects joined above 0.25 where convex (0.98 of the hull)" in widget.status.text()
    n_split = rec["n_objects"]
    widget.instances.setCurrentIndex(widget.instances.findData("threshold"))
    qtbot.waitUntil(lambda: layer.metadata["napari_impc_dl"]["params"]["instances"] == "threshold", timeout=20_000)
    wait_idle(widget)
    assert layer.metadata["napari_impc_dl"]["n_objects"] < n_split
    assert "objects by threshold" in widget.status.text()


def test_cancel_leaves_no_layer_no_files_no_threads(make_napari_viewer, qtbot, wait_idle, monkeypatch, nuclei_768):
    """Cancel mid-run: no labels layer, the temporary zarr folder is gone, no worker or reader thread left."""
    from napari_impc_dl._qt import segment_widget
    from napari_impc_dl.io import export

    monkeypatch.setattr(segment_widget, "MEMORY_LIMIT_MPX", 0.1)  # force the on-disk (zarr) path
    made = []
    real_init = export.Scratch.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        made.append(self.dir)

    monkeypatch.setattr(export.Scratch, "__init__", spy)
    viewer = make_napari_viewer()
    widget = open_segment(viewer)
    viewer.add_image(np.tile(nuclei_768[0], (2, 2)), name="big")
    widget.tile.setValue(256)  # many small tiles: a run long enough to cancel in the middle
    widget.halo.setValue(32)
    stages = []
    click(qtbot, widget.run_button)
    widget._job.worker.yielded.connect(lambda v: stages.append(v))
    qtbot.waitUntil(lambda: any(s[2].startswith("inference") and s[0] >= 1 for s in stages), timeout=120_000)
    click(qtbot, widget.cancel_button)
    wait_idle(widget, 60)
    done, total = max((s[0], s[1]) for s in stages if s[2].startswith("inference"))
    assert done < total, "the run was cancelled before it finished"
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert made and not any(Path(d).exists() for d in made)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert not [t for t in threading.enumerate() if t.name.startswith("impc-")]


def test_zarr_multiscale_image_gives_lazy_pyramid_labels(make_napari_viewer, qtbot, wait_idle, monkeypatch, tmp_path, tiny_checkpoint):
    """A multiscale zarr-backed image layer is segmented from level 0, window by window, into a zarr-backed
    multiscale Labels layer (small limits stand in for a 16k image; benchmarks/bench_widget_memory.py does the real size)."""
    import zarr

    from napari_impc_dl._qt import segment_widget

    monkeypatch.setattr(segment_widget, "MEMORY_LIMIT_MPX", 0.5)
    monkeypatch.setattr(segment_widget, "PYRAMID_SIDE", 512)
    from napari_impc_dl.io import export

    monkeypatch.setattr(export, "_CHUNK", 256)
    rng = np.random.default_rng(0)
    img = (rng.random((1536, 1536)) * 1000).astype(np.uint16)
    z0 = zarr.create_array(str(tmp_path / "img0.zarr"), shape=img.shape, dtype=img.dtype, chunks=(256, 256))
    z0[:] = img
    z1 = zarr.create_array(str(tmp_path / "img1.zarr"), shape=(768, 768), dtype=img.dtype, chunks=(256, 256))
    z1[:] = img[::2, ::2]

    reads = []

    class Watched:
        """Level 0 that records every window read from a worker thread."""

        def __init__(self, a):
            self.a, self.shape, self.dtype, self.ndim, self.size = a, a.shape, a.dtype, a.ndim, a.size

        def __getitem__(self, key):
            out = np.asarray(self.a[key])
            if threading.current_thread() is not threading.main_thread():
                reads.append(out.size)
            return out

        def __array__(self, dtype=None, copy=None):
            raise AssertionError("the whole level 0 was read")

    viewer = make_napari_viewer()
    viewer.add_image([Watched(z0), z1], name="tiled", multiscale=True)
    widget = open_segment(viewer)
    widget.set_model(tiny_checkpoint)
    assert widget.model_combo.currentData() == str(tiny_checkpoint)
    widget.foreground.setValue(0.3)
    click(qtbot, widget.run_button)
    wait_idle(widget, 120)
    layer = viewer.layers["tiled labels"]
    assert layer.multiscale and len(layer.data) >= 2
    assert all(isinstance(level, zarr.Array) for level in layer.data)
    assert layer.data[0].shape == img.shape and layer.data[1].shape == (768, 768)
    assert np.array_equal(np.asarray(layer.data[1][:]), np.asarray(layer.data[0][:])[::2, ::2])
    # windows only: tiles for the model, blocks of at most 2048 + 2 x 96 px for postprocessing and measuring
    # (this image fits in one block; benchmarks/bench_widget_memory.py shows the flat memory on 16k x 16k)
    assert reads and max(reads) <= (2048 + 2 * 96) ** 2 and sum(reads) < 4 * img.size
    rec = layer.metadata["napari_impc_dl"]
    assert rec["model"]["name"] == "tiny-test" and len(layer.features) == rec["n_objects"]
    scratch = segment_widget.scratch_of(layer)
    assert scratch.dir.exists()
    old = list(layer.data)
    widget.foreground.setValue(0.6)  # relabel into new zarr arrays; the old ones are removed once shown
    qtbot.waitUntil(lambda: viewer.layers["tiled labels"].metadata["napari_impc_dl"]["params"]["foreground_threshold"] == 0.6, timeout=30_000)
    wait_idle(widget)
    assert layer.multiscale and layer.data[0] is not old[0]
    assert not Path(old[0].store.root).exists()
    viewer.layers.remove(layer)
    del layer, old
    import gc

    gc.collect()
    assert not scratch.dir.exists(), "the temporary zarr folder goes with its layer"


def test_bad_input_is_one_clear_message(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = open_segment(viewer)
    click(qtbot, widget.run_button)  # no image layer at all
    assert "No image layer" in widget.status.text() and not widget.running
    viewer.add_image(np.full((64, 64), 7, np.uint16), name="flat")
    click(qtbot, widget.run_button)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert "constant" in widget.status.text()
    assert [layer.name for layer in viewer.layers] == ["flat"]
