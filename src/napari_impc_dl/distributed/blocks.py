"""One huge image over a dask cluster, with labels equal to the single-process engine's, pixel for pixel.

A single-process run of a large plane is ``tiles -> probabilities (zarr) -> postprocessing
blocks -> labels``. Spread over a cluster the same steps become tasks:

1. **tile tasks**: one per batch of the plane's tile plan (the plan of the whole plane, so every
   forward is one of the single-process run: same tiles, same batches, same window kept); each
   returns the probabilities of its tiles' cores (uint8), held in the workers' memory;
2. **block tasks**: one per postprocessing block of :func:`~napari_impc_dl.inference.instances.plan_blocks`,
   depending on the tile tasks whose cores cover its window (block plus halo); it assembles the
   window's probabilities, runs :func:`~napari_impc_dl.inference.instances.local_instances`, keeps
   the objects it owns (anchor in its core), numbers them ``1..n`` and measures them;
3. the **merge**, on the client: block results are laid into a band of rows in memory in raster
   order of blocks with the id offset ``1 + (objects of the blocks before)``, owned pixels over
   what is there, as ``labels_from_probabilities`` does; rows no later block can reach are written
   to the one zarr labels store in whole rows of chunks (each chunk written once, never read
   back). The block tables get the same offset and become the image's ``objects.csv`` part.

So ids, pixels and table rows equal the single-process result (seam-free: an object crossing
block borders has one owner and one id). The probabilities never touch the disk. Block tasks
run before waiting tile tasks (higher priority), so blocks finish, merge and free their tiles'
memory in raster order while the rest of the image is still being inferred.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .worker import ONE_AT_A_TIME, open_source, runnables

TILE_PRIORITY = 10
BLOCK_PRIORITY = 20


def tile_plan(desc: dict):
    from ..inference.tiling import plan_tiles

    return plan_tiles(desc["spatial_shape"], desc["tile"], desc["halo"], **desc["rules"])


def tile_groups(n_tiles: int, batch: int) -> list[tuple[int, int]]:
    """The plan's batches as ``(first, end)`` tile indices, as the engine forms them."""
    return [(i, min(n_tiles, i + batch)) for i in range(0, n_tiles, batch)]


def _overlaps(t, w) -> bool:
    return t.cy0 < w.y1 and t.cy1 > w.y0 and t.cx0 < w.x1 and t.cx1 > w.x0


def _read_fn(src, plane, channels, dy: int = 0, dx: int = 0):
    def read(t):
        x = src.read(plane, slice(t.y0 + dy, t.y1 + dy), slice(t.x0 + dx, t.x1 + dx))
        return x[channels] if channels is not None else x

    return read


def tile_task(desc: dict, job, plane: tuple, group: tuple[int, int], normalize) -> dict:
    """Probabilities of the cores of one batch of the plane's tile plan: ``{"cores": [((cy0, cy1, cx0, cx1), uint8 (K, h, w)), ...]}``."""
    from ..inference.engine import keep_window_size, predict_tiles
    from ..inference.tiling import Tile, TilePlan

    with ONE_AT_A_TIME:
        model, _ = runnables(job)
        src = open_source(desc["path"], job.config.get("channel_axis", "auto"), job.config.get("level"), job.config.get("pixel_size_um"))
        plan = tile_plan(desc)
        tiles = plan.tiles[group[0] : group[1]]
        ey0, ex0 = min(t.y0 for t in tiles), min(t.x0 for t in tiles)
        ey1, ex1 = max(t.y1 for t in tiles), max(t.x1 for t in tiles)
        local = TilePlan(
            shape=(ey1 - ey0, ex1 - ex0), tile_shape=plan.tile_shape, halo=plan.halo,
            tiles=tuple(Tile(t.y0 - ey0, t.y1 - ey0, t.x0 - ex0, t.x1 - ex0, t.cy0 - ey0, t.cy1 - ey0, t.cx0 - ex0, t.cx1 - ex0, t.py, t.px) for t in tiles),
        )
        out = np.zeros((desc["n_outputs"], ey1 - ey0, ex1 - ex0), np.uint8)
        batch = desc["batch"]
        stats = predict_tiles(model, _read_fn(src, plane, desc["channels"], ey0, ex0), local, out, normalize, batch=batch, keep_size=keep_window_size(plan, batch))
        cores = [((t.cy0, t.cy1, t.cx0, t.cx1), out[:, t.cy0 - ey0 : t.cy1 - ey0, t.cx0 - ex0 : t.cx1 - ex0].copy()) for t in tiles]
        return {"cores": cores, "seconds": stats.seconds, "device": stats.device}


def block_task(desc: dict, job, plane: tuple, window, *tiles: dict) -> dict:
    """One postprocessing block: the objects it owns, numbered ``1..n``, their pixels in the window, their table."""
    import pandas as pd

    from ..inference.instances import local_instances
    from ..measure.regions import measure_objects

    with ONE_AT_A_TIME:
        t0 = time.perf_counter()
        w = window
        h, wd = w.y1 - w.y0, w.x1 - w.x0
        p = np.zeros((desc["n_outputs"], h, wd), np.uint8)
        for res in tiles:
            for (cy0, cy1, cx0, cx1), arr in res["cores"]:
                y0, y1, x0, x1 = max(cy0, w.y0), min(cy1, w.y1), max(cx0, w.x0), min(cx1, w.x1)
                if y0 < y1 and x0 < x1:
                    p[:, y0 - w.y0 : y1 - w.y0, x0 - w.x0 : x1 - w.x0] = arr[:, y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
        labels, anchors = local_instances(p[0], p[1] if p.shape[0] > 1 else None, desc["instances"])
        del p
        ay, ax = anchors // wd + w.y0, anchors % wd + w.x0
        owned = (ay >= w.cy0) & (ay < w.cy1) & (ax >= w.cx0) & (ax < w.cx1)
        n = int(owned.sum())
        lut = np.zeros(len(anchors) + 1, np.int32)
        lut[1:][owned] = np.arange(1, n + 1, dtype=np.int32)
        glob = lut[labels]
        del labels
        post = time.perf_counter() - t0
        src = open_source(desc["path"], job.config.get("channel_axis", "auto"), job.config.get("level"), job.config.get("pixel_size_um"))
        inten = src.read(plane, slice(w.y0, w.y1), slice(w.x0, w.x1))
        if desc["channels"] is not None:
            inten = inten[desc["channels"]]
        frame = pd.DataFrame(measure_objects(glob, 1, n, inten, desc["names"], offset=(w.y0, w.x0)))
        for a, idx in zip(desc["stack_axes"], plane):
            frame.insert(0, a.lower(), idx)
        compact = glob.astype(np.uint16) if n < np.iinfo(np.uint16).max else glob
        return {"n": n, "labels": compact, "table": frame, "postprocess_s": post, "measure_s": time.perf_counter() - t0 - post}


class ImageBlocks:
    """Client side of one huge image: submits its tasks, merges block results in raster order, then writes its files."""

    def __init__(self, client, item, job, desc: dict, *, retries: int, out: Path, tmp_parent: Path) -> None:
        from ..inference.instances import plan_blocks
        from ..io.outputs import create_zarr

        self.item, self.job, self.out = item, job, out
        self.t0 = time.perf_counter()
        slim = {k: v for k, v in desc.items() if k != "normalizers"}
        self.desc = slim
        plan = tile_plan(slim)
        groups = tile_groups(len(plan.tiles), slim["batch"])
        params = slim["instances"]
        H, W = slim["spatial_shape"]
        self.windows = plan_blocks((H, W), params.block, params.halo)
        self.planes = [tuple(p) for p in slim["planes"]]
        stack = tuple(slim["stack_shape"])
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{item.name[:40]}-blocks-", dir=tmp_parent))
        self.lname = f"{item.name}_labels.zarr"
        self.store = create_zarr(self.tmp / self.lname, stack + (H, W), np.int32, (1,) * len(stack) + (1024, 1024))  # as segment
        self.futures: dict[str, tuple[int, int]] = {}
        self.pending: dict[tuple[int, int], dict] = {}
        self.next = (0, 0)
        self.next_id = 1
        self.tables: list = []
        self.merge_s = 0.0
        self.height, self.width = H, W
        self.chunk = 1024
        self.band = None  # rows band_y0.. of the current plane, merged but not yet written
        self.band_y0 = 0
        self.stats = {"tiles": 0, "blocks": len(self.windows) * len(self.planes), "postprocess_s": 0.0, "measure_s": 0.0}
        token = f"{job.run_id}-{item.index}"
        submitted = []
        for pi, plane in enumerate(self.planes):
            norm = client.scatter(desc["normalizers"][pi], hash=False)
            tiles = [
                client.submit(tile_task, slim, job, plane, g, norm, key=f"impc-tiles-{token}-{pi}-{gi}", priority=TILE_PRIORITY, pure=False, retries=retries)
                for gi, g in enumerate(groups)
            ]
            self.stats["tiles"] += len(plan.tiles)
            for bi, w in enumerate(self.windows):
                deps = [f for f, g in zip(tiles, groups) if any(_overlaps(t, w) for t in plan.tiles[g[0] : g[1]])]
                f = client.submit(block_task, slim, job, plane, w, *deps, key=f"impc-block-{token}-{pi}-{bi}", priority=BLOCK_PRIORITY, pure=False, retries=retries)
                self.futures[f.key] = (pi, bi)
                submitted.append(f)
        self.block_futures = submitted  # the tile futures are held by the scheduler only while blocks need them

    @property
    def n_blocks(self) -> int:
        return len(self.futures)

    @property
    def n_merged(self) -> int:
        return self.next[0] * len(self.windows) + self.next[1]

    @property
    def complete(self) -> bool:
        return self.next[0] >= len(self.planes)

    def add(self, key: str, result: dict) -> None:
        """A block's result: merged now if it is the next in raster order, else kept until it is."""
        self.pending[self.futures[key]] = result
        while self.next in self.pending:
            self._merge(self.next, self.pending.pop(self.next))
            pi, bi = self.next
            self.next = (pi, bi + 1) if bi + 1 < len(self.windows) else (pi + 1, 0)

    def _merge(self, at: tuple[int, int], res: dict) -> None:
        """Block ``at`` into the band of rows held in memory; rows no later block reaches go to the store."""
        t0 = time.perf_counter()
        pi, bi = at
        w = self.windows[bi]
        if self.band is None:
            self.band, self.band_y0 = np.zeros((0, self.width), np.int32), 0
        if w.y1 > self.band_y0 + len(self.band):  # grow the band down to this window's last row
            grown = np.zeros((w.y1 - self.band_y0, self.width), np.int32)
            grown[: len(self.band)] = self.band
            self.band = grown
        lab = res["labels"]
        offset = self.next_id - 1
        region = self.band[w.y0 - self.band_y0 : w.y1 - self.band_y0, w.x0 : w.x1]
        sel = lab > 0
        region[sel] = lab[sel].astype(np.int32) + offset  # owned pixels over what is there, as the single-process run
        table = res["table"]
        if offset and len(table):
            table["label"] += offset
        self.tables.append(table)
        self.next_id += res["n"]
        self.stats["postprocess_s"] += res["postprocess_s"]
        self.stats["measure_s"] += res["measure_s"]
        last = bi + 1 == len(self.windows)
        self._flush(pi, self.height if last else self.windows[bi + 1].y0, last)
        self.merge_s += time.perf_counter() - t0

    def _flush(self, pi: int, final: int, last: bool) -> None:
        """Write the band's rows above ``final`` (no later block of the plane reaches them) to the store, in
        whole rows of storage chunks: every chunk is written once and never read back."""
        stop = final if last else self.band_y0 + (final - self.band_y0) // self.chunk * self.chunk
        if stop <= self.band_y0:
            return
        n = stop - self.band_y0
        self.store[self.planes[pi] + (slice(self.band_y0, stop), slice(None))] = self.band[:n]
        if last:
            self.band = None
        else:
            self.band, self.band_y0 = self.band[n:].copy(), stop

    def finish(self, classifier, cfg, cancel=None):
        """Write the image's files (labels store, table parts) into place; the Outcome."""
        import pandas as pd

        from ..inference.pipeline import SegmentationResult
        from ..io.image import open_image
        from .image_task import DONE, Outcome, finish_image

        t0 = time.perf_counter()
        objects = pd.concat(self.tables, ignore_index=True) if self.tables else pd.DataFrame(columns=["label"])
        d = self.desc
        timings = {**self.stats, "merge_s": round(self.merge_s, 4), "device": "cluster", "batch": d["run_params"]["batch"]}
        res = SegmentationResult(self.item.name, self.store, None, objects, self.next_id - 1, d["model"], d["run_params"], timings, d["stack_axes"])
        src = open_image(self.item.path, channel_axis=cfg.channel_axis, level=cfg.level, pixel_size_um=cfg.pixel_size_um)
        try:
            src.name = self.item.name
            outputs = finish_image(self.out, self.item, self.tmp, self.lname, res, classifier, src, cfg, cancel=cancel, export=self.job.export)
        finally:
            src.close()
            self.cleanup()
        self.merge_s += time.perf_counter() - t0
        timings["merge_s"] = round(self.merge_s, 4)
        return Outcome(self.item.name, self.item.index, DONE, time.perf_counter() - self.t0, outputs=outputs, n_objects=int(self.next_id - 1), timings=timings)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
