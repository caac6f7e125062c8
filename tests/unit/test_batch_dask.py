"""``batch`` on a real dask ``LocalCluster`` of two worker processes (one per module: each worker imports torch once).

A folder with a corrupt file, a worker killed mid-run, the client interrupted and rerun, and one
4096 x 4096 zarr image spread over both workers that equals the single-process ``segment`` result
object for object.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_impc_dl import api
from napari_impc_dl.cli import main
from napari_impc_dl.errors import CancelToken, Cancelled

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


def _write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    from napari_impc_dl.synthetic import make_nuclei_image

    paths = []
    for i in range(n):
        img, _ = make_nuclei_image((64, 64), seed=seed + i)
        p = folder / ("sub" if i % 3 == 2 else "") / f"d{i:02d}.tif"
        p.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(p, img)
        paths.append(p)
    return paths


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return sorted(map(tuple, frame.astype(str).to_numpy()))


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def folder12(tmp_path_factory, starter):
    """12 images, one of them cut off half way, and their tables from an in-process run."""
    root = tmp_path_factory.mktemp("dask12")
    paths = _write_images(root / "in", 12)
    data = paths[7].read_bytes()
    paths[7].write_bytes(data[: len(data) // 2])
    api.batch(root / "in", root / "ref", model=starter)
    return root / "in", root / "ref"


def _same_tables(out: Path, ref: Path) -> None:
    for name in ("objects.csv", "counts.csv", "failures.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_folder_with_a_corrupt_file_on_the_cluster(tmp_path, client, folder12):
    folder, ref = folder12
    r = api.batch(folder, tmp_path / "out", model="nuclei", client=client)
    assert r.executor == "dask" and len(r.computed) == 12 and r.n_failed == 1
    assert len(pd.read_csv(tmp_path / "out" / "failures.csv")) == 1
    _same_tables(tmp_path / "out", ref)  # the same files as in one process, byte for byte


def test_interrupted_client_resumes_on_the_cluster(tmp_path, client, folder12):
    folder, ref = folder12
    out = tmp_path / "out"
    token = CancelToken()

    def stop(done, total, stage):
        if done >= 4:
            token.cancel()

    with pytest.raises(Cancelled):
        api.batch(folder, out, model="nuclei", client=client, progress=stop, cancel=token)
    manifest = pd.read_csv(out / "manifest.csv")
    finished = set(manifest.image[manifest.status != "pending"])
    assert 4 <= len(finished) < 12
    again = api.batch(folder, out, model="nuclei", client=client)
    assert set(again.computed) == set(manifest.image) - finished
    _same_tables(out, ref)


def test_a_worker_killed_mid_run_gives_the_same_results(tmp_path, client, folder12):
    folder, ref = folder12
    pids = client.run(os.getpid)
    killed = []

    def kill_one(done, total, stage):
        if done >= 2 and not killed:
            busy = {addr: keys for addr, keys in client.processing().items() if keys}
            if busy:  # the worker computing an image right now
                addr = sorted(busy)[0]
                os.kill(pids[addr], signal.SIGKILL)
                killed.append((pids[addr], list(busy[addr])))

    r = api.batch(folder, tmp_path / "out", model="nuclei", client=client, progress=kill_one)
    assert killed and killed[0][1], "no worker was computing when the kill came"
    assert r.n_failed == 1 and len(r.computed) == 12
    _same_tables(tmp_path / "out", ref)  # its images were rerun elsewhere, with the same results
    client.wait_for_workers(2, timeout=120)
    assert killed[0][0] not in client.run(os.getpid).values()  # the nanny started a new worker


def test_huge_zarr_over_two_workers_equals_the_single_process_result(tmp_path, client, starter):
    import zarr

    from napari_impc_dl.synthetic import make_nuclei_image

    tile, _ = make_nuclei_image((1024, 1024), seed=21, density=0.4)
    img = np.tile(tile, (4, 4))  # 4096 x 4096
    (tmp_path / "in").mkdir()
    z = zarr.create_array(str(tmp_path / "in" / "big.zarr"), shape=img.shape, chunks=(512, 512), dtype=img.dtype)
    z[:] = img
    cfg = {"in_memory_limit_mpx": 8.0}  # 16.8 Mpx: large, so blocks go to the cluster (2 x 2 blocks of 2048)
    seg = api.segment([tmp_path / "in" / "big.zarr"], tmp_path / "seg", model=starter, **cfg)
    r = api.batch(tmp_path / "in", tmp_path / "bat", model="nuclei", client=client, **cfg)
    t = r.timings["big"]
    assert t["blocks"] == 4 and t["merge_s"] >= 0
    a = zarr.open_array(str(tmp_path / "seg" / "big_labels.zarr"))
    b = zarr.open_array(str(tmp_path / "bat" / "big_labels.zarr"))
    assert a.shape == b.shape == (4096, 4096) and a.dtype == b.dtype
    assert np.array_equal(a[:], b[:])  # ids and pixels
    for name in ("objects.csv", "counts.csv"):
        assert (tmp_path / "seg" / name).read_bytes() == (tmp_path / "bat" / name).read_bytes(), name
    objects = pd.read_csv(tmp_path / "bat" / "objects.csv")
    across = ((objects.bbox_min_x < 2048) & (objects.bbox_max_x > 2048)) | ((objects.bbox_min_y < 2048) & (objects.bbox_max_y > 2048))
    assert across.sum() > 10 and len(objects) == seg.n_objects  # objects across block borders, each once


def test_cli_starts_a_local_cluster(tmp_path, capsys):
    _write_images(tmp_path / "in", 3, seed=50)
    assert main(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--cluster", "local:1", "--preset", "nuclei"]) == 0
    assert "3 of 3 image(s) done" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "out" / "counts.csv")) == 3
