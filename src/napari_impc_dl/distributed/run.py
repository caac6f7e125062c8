"""``run_batch``: a folder (glob, CSV, files) of images -> labels, merged tables, a manifest; resumable.

1. collect the inputs and give each a unique name (:mod:`.inputs`); check no output would overwrite one;
2. load the model (and classifier) here: their hashes identify results; the in-process loop runs them;
3. skip every image whose latest log line matches its input, model and parameters (:mod:`.manifest`);
4. run the rest, in this process or on a dask cluster (:mod:`.executors`), logging each image as it finishes;
5. always: rebuild ``manifest.csv``; when every input was got through: the merged tables (:mod:`.tables`).

Interrupted (Ctrl-C, cancel, a killed process), the folder is resumable as it is: rerunning the
same command does only what is not finished.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .inputs import collect_inputs
from .manifest import DONE, ERROR, FAILED, DoneLog, Identity, batch_dir, extra_hash, fingerprint, outputs_exist, params_hash, write_manifest

log = logging.getLogger(__name__)

TABLES = ("objects.csv", "counts.csv", "failures.csv", "manifest.csv", "predictions.csv")


@dataclass
class BatchReport:
    """What :func:`run_batch` did and where the results are."""

    out_dir: Path
    n_inputs: int
    computed: list[str]
    """Names of the images computed by this run (done or failed)."""
    skipped: list[str]
    """Names of the images an earlier run had finished."""
    failures: list[tuple[str, str]]
    """``(path, reason)`` of every input that failed (in this run or, unchanged since, in an earlier one)."""
    tables: list[Path]
    manifest_csv: Path
    failures_csv: Path | None
    seconds: float
    n_objects: int = 0
    timings: dict = field(default_factory=dict)
    """Per image computed: its timings (for a huge image on a cluster: tiles, blocks, ``merge_s``)."""
    executor: str = "in-process"

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def n_done(self) -> int:
        return self.n_inputs - self.n_failed

    @property
    def ok(self) -> bool:
        return not self.failures


def _ref(model):
    """A model reference workers can resolve: a preset or library name as it is, a path made absolute."""
    if model is None or hasattr(model, "forward"):
        return model
    p = Path(os.fspath(model)).expanduser()
    return str(p.resolve()) if p.exists() else str(model)


def _card_hash(ref, kind: str) -> str | None:
    """The content hash of a checkpoint reference (a preset, a file, a training folder) from its card, checked
    to be a segmentation model (``kind="model"``) or an object classifier; None for anything else (a package)."""
    from ..classify.loading import checkpoint_path
    from ..models.checkpoint import read_card
    from ..presets import PRESETS, classifier_path, get, preset_path
    from ..zoo.package import looks_like_package

    ref = "nuclei" if ref is None and kind == "model" else ref
    preset = get(ref) if isinstance(ref, str) else None
    if kind == "model" and preset is not None and ref.strip().lower() in PRESETS:
        path = preset_path(ref)
    else:
        path = checkpoint_path(ref)
        if kind == "classifier" and preset is not None and not (path.is_file() or looks_like_package(path)):
            path = classifier_path(preset.name)
        if not path.is_file() or looks_like_package(path):
            return None
    card = read_card(path)
    if kind == "model" and card.task == "classification":
        raise InputError(f"'{ref}' is a classifier, not a segmentation model", "Use it with `classify --model` or `--classifier`")
    if kind == "classifier" and (card.task != "classification" or card.classification.level != "object"):
        raise InputError(f"--classifier '{ref}' is not an object classifier", "Give an object-level classifier (a preset such as chromosomes, a training folder or checkpoint)")
    return card.short_hash


def _guard_inputs(out: Path, items) -> None:
    inputs = {Path(os.path.realpath(it.path)) for it in items}
    for it in items:
        for name in (f"{it.name}_labels.tif", f"{it.name}_labels.zarr"):
            if Path(os.path.realpath(out / name)) in inputs:
                raise InputError(f"Writing '{out / name}' would overwrite the input '{it.path}'", "Choose another --out folder")
    for name in TABLES:
        if Path(os.path.realpath(out / name)) in inputs:
            raise InputError(f"Writing '{out / name}' would overwrite an input", "Choose another --out folder")
    if Path(os.path.realpath(batch_dir(out))) in {p.parent for p in inputs}:
        raise InputError(f"An input lies in the batch's own folder '{batch_dir(out)}'", "Move it elsewhere")


def run_batch(
    inputs,
    out_dir,
    *,
    model=None,
    config=None,
    options=None,
    classifier=None,
    weights: str | None = None,
    trust_code: bool = False,
    client=None,
    progress=None,
    cancel=None,
) -> BatchReport:
    """Segment (and classify) every image of ``inputs`` into ``out_dir``, resuming what an earlier run finished.

    ``config`` is a :class:`~napari_impc_dl.config.SegmentConfig`, ``options`` a
    :class:`~napari_impc_dl.config.BatchConfig` (workers / scheduler, force, hash). ``client``: a
    ``distributed.Client`` to run on (a notebook's). ``model``: a reference (preset, checkpoint,
    package, library name) or, in-process only, a loaded Runnable.
    """
    from ..classify.loading import load_classifier
    from ..config import BatchConfig, SegmentConfig
    from ..inference.loading import load_model
    from ..io.outputs import ensure_writable_dir
    from .executors import in_process, on_cluster, open_client
    from .tables import merge_tables, write_failures
    from .worker import Job

    t_start = time.perf_counter()
    config = config or SegmentConfig()
    options = options or BatchConfig()
    on_dask = client is not None or options.workers is not None or options.scheduler is not None
    if on_dask and hasattr(model, "forward"):
        raise InputError("A loaded model cannot be sent to dask workers", "Pass the model's reference (a preset name, a checkpoint or package path) instead")
    out = Path(out_dir).expanduser()
    items = collect_inputs(inputs, out)
    out = ensure_writable_dir(out).resolve()
    _guard_inputs(out, items)

    # the models: their hashes identify results; in-process they also run here (on a cluster the workers load
    # them: here a checkpoint's card is enough, read without torch)
    from ..presets import classifier_for

    clf_ref = classifier_for(model, classifier)
    if on_dask and hasattr(clf_ref, "forward"):
        raise InputError("A loaded classifier cannot be sent to dask workers", "Pass its reference (preset, training folder, checkpoint or package) instead")
    runnable = clf = None
    m_hash = _card_hash(model, "model") if on_dask else None
    if m_hash is None:
        runnable = load_model(model, device="cpu" if on_dask else config.device, weights=weights, trust_code=trust_code)
        m_hash = runnable.info.content_hash
    c_hash = ""
    if clf_ref is not None:
        c_hash = _card_hash(clf_ref, "classifier") if on_dask else None
        if c_hash is None:
            clf = clf_ref if hasattr(clf_ref, "forward") else load_classifier(clf_ref, device="cpu" if on_dask else config.device)
            if clf.spec.level != "object":
                raise InputError(f"--classifier '{clf.info.name}' classifies whole images, not objects", "Use `classify` for image-level classifiers")
            c_hash = clf.info.content_hash
    p_hash = params_hash(config, {"weights": weights, **({"export": sorted(options.export)} if options.export else {})})

    identities = {}
    for it in items:
        fp = fingerprint(it.path, sha256=options.hash_inputs)
        identities[it.index] = Identity(str(it.path), it.name, fp["size"], fp["mtime_ns"], fp["sha256"], m_hash, c_hash, p_hash, extra_hash(it.extra))
    done_log = DoneLog(out)
    records = done_log.latest()
    todo, skipped = [], []
    for it in items:
        ident = identities[it.index]
        rec = records.get(ident.input)
        keep = not options.force and rec is not None and ident.matches(rec, by_hash=options.hash_inputs) and (
            (rec["status"] == DONE and outputs_exist(out, rec)) or rec["status"] == FAILED
        )
        (skipped if keep else todo).append(it)
    shutil.rmtree(batch_dir(out) / "tmp", ignore_errors=True)  # what a killed run was writing

    job = Job(  # in-process the loaded models run; workers load theirs from these references
        out_dir=str(out), model=_ref(model) if on_dask else None, classifier=_ref(clf_ref) if on_dask else None,
        config=config.model_dump(), weights=weights, trust_code=trust_code, blockwise=on_dask, run_id=uuid.uuid4().hex[:8],
        export=tuple(options.export),
    )
    computed, timings, n_failed = [], {}, 0
    stage = {"text": ""}

    def report(done: int) -> None:
        if progress is not None:
            bits = [f"{n_failed} failed"] if n_failed else []
            if stage["text"]:
                bits.append(stage["text"])
            progress(done, len(todo), ", ".join(bits))

    def events(text: str) -> None:
        stage["text"] = text
        report(len(computed))

    executor = "in-process"
    try:
        if todo:
            report(0)
        if todo and on_dask:
            with open_client(workers=options.workers, scheduler=options.scheduler, client=client) as (c, threads):
                executor = "dask"
                job = dataclasses.replace(job, torch_threads=threads)
                loader = _client_classifier(clf_ref, config)
                for oc in on_cluster(c, todo, job, retries=options.retries, cancel=cancel, classifier_loader=loader, config=config, events=events):
                    n_failed += _log(done_log, identities, records, items, oc)
                    computed.append(oc.name)
                    timings[oc.name] = oc.timings
                    stage["text"] = ""
                    report(len(computed))
        elif todo:
            for oc in in_process(todo, job, runnable, clf, cancel=cancel):
                n_failed += _log(done_log, identities, records, items, oc)
                computed.append(oc.name)
                timings[oc.name] = oc.timings
                report(len(computed))
    finally:  # also when interrupted: the manifest says what is finished
        done_log.close()
        manifest = write_manifest(out, items, identities, records, by_hash=options.hash_inputs)

    # every input got through: the tables from the parts of the current inputs' current records
    current = [(it, records.get(identities[it.index].input)) for it in items]
    current = [(it, r) for it, r in current if r is not None and identities[it.index].matches(r, by_hash=options.hash_inputs)]
    done = [(it, r) for it, r in current if r["status"] == DONE]
    tables = merge_tables(out, [(it.name, r["outputs"]) for it, r in done])
    failures = [(str(it.path), r["error"]) for it, r in current if r["status"] in (FAILED, ERROR)]
    failures_csv = write_failures(out, failures)
    n_objects = sum(int(r.get("n_objects") or 0) for _, r in done)
    return BatchReport(out, len(items), computed, [it.name for it in skipped], failures, tables, manifest, failures_csv, time.perf_counter() - t_start, n_objects, timings, executor)


def _log(done_log: DoneLog, identities, records, items, oc) -> int:
    """Append one finished image to the log (its outputs are in place); 1 when it failed."""
    ident = identities[oc.index]
    rec = ident.record(oc.status, seconds=oc.seconds, error=oc.error, outputs=oc.outputs, n_objects=oc.n_objects)
    done_log.append(rec)
    records[ident.input] = rec
    if oc.status != DONE:
        log.info("batch: %s: %s", ident.input, oc.error)
    return int(oc.status != DONE)


def _client_classifier(ref, config):
    """Load the classifier here only when a huge image (merged here) needs it."""
    cache = {}

    def load():
        if ref is None:
            return None
        if "clf" not in cache:
            from ..classify.loading import load_classifier

            cache["clf"] = ref if hasattr(ref, "forward") else load_classifier(ref, device=config.device)
        return cache["clf"]

    return load
