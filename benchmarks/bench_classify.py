"""Object classification throughput: the 4096 x 4096 benchmark image's objects, from a lazy zarr, against the
bare batched forward over the same crops.

    python benchmarks/bench_classify.py [--arch resnet18] [--size 64] [--batch 64] [--device D] [--image-size 4096]

The image is ``bench_inference.py``'s (``write_large_nuclei_zarr``, seed 11); its objects are those
the bundled ``nuclei`` model finds (segmented once, labels cached as zarr in ``--workdir``). The
classifier has random weights (only the speed is measured): ``--arch`` at ``--size`` px, input
``image+mask``, bounding-box crops.

Ours: ``classify_objects`` on the zarr image and zarr labels (boxes from label bands, crops cut
region by region and resampled on the producer thread, batched forward with the engine's
device / AMP / OOM machinery). Bare: the same network in inference mode and channels_last on
the same crops, already in memory as one tensor, in batches of the same size.

Last line: one JSON object: n_objects, ours_s, bare_s, ours_objects_per_s, bare_objects_per_s,
efficiency (bare_s / ours_s), and the settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _labels(work: Path, size: int):
    import zarr

    from napari_impc_dl import api
    from napari_impc_dl.synthetic import write_large_nuclei_zarr

    image = work / f"nuclei_{size}.zarr"
    if not image.exists():
        write_large_nuclei_zarr(image, size, seed=11)
    lab_path = work / f"nuclei_{size}_labels.zarr"
    if not lab_path.exists():
        res = api.segment_image(image, api.load_model("nuclei", device="auto"))
        z = zarr.open_array(lab_path, mode="w", shape=res.labels.shape, dtype=np.int32, chunks=(1024, 1024))
        z[:] = np.asarray(res.labels)
    return image, zarr.open_array(lab_path, mode="r")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=None, help="crops per forward (default: 64 on the CPU, 256 on a GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image-size", type=int, default=4096)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "napari-impc-dl-bench")
    a = ap.parse_args()

    import torch

    from napari_impc_dl.classify.crops import iter_crop_batches, object_boxes
    from napari_impc_dl.classify.predict import classify_objects, default_batch
    from napari_impc_dl.classify.runnable import ClassifierModel
    from napari_impc_dl.inference.batches import BatchStats
    from napari_impc_dl.inference.engine import describe_device, resolve_device
    from napari_impc_dl.io.image import open_image
    from napari_impc_dl.models.card import ClassificationSpec, CropRule, ModelCard
    from napari_impc_dl.models.classifiers import build_classifier, classifier_architecture

    from napari_impc_dl.inference.allocator import reuse_large_buffers, share_one_arena

    share_one_arena()  # as the command line does
    a.workdir.mkdir(parents=True, exist_ok=True)
    image_path, labels = _labels(a.workdir, a.image_size)
    device = resolve_device(a.device)
    torch.manual_seed(0)
    spec = ClassificationSpec(level="object", classes=["a", "b", "c"], input_size=a.size, crop=CropRule(), image_channels=1)
    arch = classifier_architecture(a.arch, 2, 3)
    card = ModelCard(name=f"bench-{a.arch}", task="classification", architecture=arch, classification=spec, output_names=["a", "b", "c"], weights_sha256="0" * 64)
    model = ClassifierModel(build_classifier(arch).eval(), card, source="memory").to(device)
    batch = a.batch or default_batch(model)

    src = open_image(image_path)
    stats = BatchStats()
    t0 = time.perf_counter()
    table = classify_objects(model, src, labels, batch=batch, stats=stats)
    ours_s = time.perf_counter() - t0
    n = len(table)

    # bare: the same crops, in memory, the same batches
    boxes = object_boxes(labels)
    norm = model.fit_normalizer(src.sample(()))
    crops = np.concatenate([c for _, c in iter_crop_batches(lambda ys, xs: src.read((), ys, xs), labels, src.spatial_shape, spec.crop, a.size, normalize=norm, boxes=boxes, batch=batch)])
    x = torch.from_numpy(crops)
    net = model.net
    with torch.inference_mode(), reuse_large_buffers():
        net(x[:batch].to(device).contiguous(memory_format=torch.channels_last))
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs = []
        from napari_impc_dl.inference.engine import _autocast

        with _autocast(device):
            for i in range(0, len(x), batch):
                outs.append(net(x[i : i + batch].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)).float().softmax(1))
        torch.cat(outs).cpu()
        bare_s = time.perf_counter() - t0
    src.close()
    print(json.dumps({
        "n_objects": n, "arch": a.arch, "size": a.size, "batch": batch, "device": describe_device(device), "threads": torch.get_num_threads(),
        "ours_s": round(ours_s, 2), "bare_s": round(bare_s, 2), "ours_objects_per_s": round(n / ours_s, 1), "bare_objects_per_s": round(n / bare_s, 1),
        "efficiency": round(bare_s / ours_s, 3), "wait_s": round(stats.wait_s, 2),
    }))


if __name__ == "__main__":
    main()
