"""The README and the user guide work as written: every shell command in them runs, every image and local link exists.

How the test reads the markdown (write new examples to these rules):

* **Shell blocks** are fenced ``bash``, ``sh``, ``shell`` or ``console``. Each line is one command; a trailing
  ``\\`` continues it, ``#`` starts a comment (as in bash).
* **Skipping a block**: ``<!-- docs-test: skip (REASON) -->`` on the line before the block (blank lines may
  come between) keeps the test from running it, e.g. ``(needs a network)``, ``(needs a GPU)``, ``(opens a window)``,
  ``(runs for hours)``. The reason is required; the test lists skipped blocks with their reasons.
* ``[--option VALUE]`` in a command marks an optional argument: the command is run without it.
* ``napari-impc-dl ...`` and ``.venv/bin/napari-impc-dl ...`` run in this process through
  ``napari_impc_dl.cli.main`` (one PyTorch import for all of them; that the console script exists is checked
  once), with the shell's globbing done here, in one temporary working directory per document, in the order
  written, with ``NAPARI_IMPC_DL_HOME`` (the model library) inside that directory. The exit status must be 0.
* ``make TARGET`` is not run (it sets up the very environment this test runs in, or runs this test suite):
  the test checks that the Makefile has the target.
* Any other program in an unmarked block fails the test: mark the block, or teach the test here.
* **Inputs that stand for the reader's own files** (``my_images/*.tif``, ``big.ome.zarr``, ``affable-shark.zip``,
  ...) are made by ``FIXTURES`` below, small, from synthetic data, just before the first command naming them
  (``affable-shark.zip`` is a small stand-in package, not the Model Zoo's model). A command naming a new such
  input fails ("no such file") until a fixture is added.
* **Made shorter, and said so here**: ``train`` commands run with ``--epochs 1`` and without ``--time-limit``
  (the docs' runs take minutes; one epoch proves the command line). Nothing else is changed.
* **Skipped only where the machine cannot do it**: a command with ``--device cuda`` / ``cuda:N`` / ``mps`` runs
  only where PyTorch sees such a device; a command naming a bundled preset (``--preset X``, ``--from X``,
  ``--model X``, ``--classifier X``, ``zoo export X``) that ``napari_impc_dl.presets`` lists but whose model
  files (segmentation model, classifier) are not all installed yet is skipped with the reason; any other
  failure fails. Each command is its own test case, so skips show (``pytest -rs``).

The whole module takes 40-65 s on 2 CPU cores shared with other work (most of it: three one-epoch trainings,
two package exports and the preset runs), with PyTorch on one thread (see ``_one_torch_thread``).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex
import shutil
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_DOCS = ("README.md", "docs/user-guide.md")  # shell commands run
LINK_DOCS = ("README.md", "docs/user-guide.md", "docs/index.md", "docs/cli.md", "docs/benchmarks.md")  # images, links
SHELL = {"bash", "sh", "shell", "console"}
SKIP_MARK = re.compile(r"<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
CLI_NAMES = {"napari-impc-dl", ".venv/bin/napari-impc-dl"}
MODEL_FLAGS = {"--preset", "--from", "--model", "--classifier"}


# --------------------------------------------------------------------------------------- reading the markdown


@dataclass
class Command:
    doc: str
    line: int
    text: str  # as written (continuations joined, comment dropped)
    argv: list[str] = field(default_factory=list)
    skip: str | None = None  # the block's skip reason

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    lines: list[tuple[int, str]]
    skip: str | None


def blocks(doc: str) -> list[Block]:
    """Fenced code blocks of ``doc`` with their skip marks."""
    text = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    out, i, pending = [], 0, None
    while i < len(text):
        line = text[i]
        m = SKIP_MARK.search(line)
        if m:
            pending = (m.group("reason") or "").strip() or "(no reason given)"
        fence = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", line)
        if fence:
            mark, lang, start, body = fence.group(2), fence.group(3).lower(), i + 1, []
            i += 1
            while i < len(text) and not text[i].strip().startswith(mark):
                body.append((i + 1, text[i]))
                i += 1
            out.append(Block(doc, start, lang, body, pending))
            pending = None
        elif line.strip() and not m:
            pending = None  # the mark must come right before the block
        i += 1
    return out


def _strip_comment(s: str) -> str:
    """Drop a ``#`` comment outside quotes."""
    quote = None
    for k, ch in enumerate(s):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or s[k - 1].isspace()):
            return s[:k]
    return s


def commands(doc: str) -> list[Command]:
    out = []
    for b in blocks(doc):
        if b.lang not in SHELL:
            continue
        buf, first = "", None
        for n, raw in b.lines:
            s = _strip_comment(raw).rstrip()
            if first is None:
                if not s.strip():
                    continue
                first = n
            if s.endswith("\\"):
                buf += s[:-1] + " "
                continue
            buf += s
            if buf.strip():
                text = " ".join(buf.split())
                if text.startswith("$ "):
                    text = text[2:]
                cmd = Command(doc, first, text, skip=b.skip)
                cmd.argv = shlex.split(re.sub(r"\s\[--[^\]]*\]", "", text))  # [--optional ...]: left out
                out.append(cmd)
            buf, first = "", None
    return out


def _all_commands() -> list[Command]:
    return [c for d in RUN_DOCS for c in commands(d)]


# --------------------------------------------------------------------------------------- inputs the docs assume


def _nuclei(folder: Path, n: int, size: int = 128, seed: int = 1) -> list[Path]:
    from napari_impc_dl import api

    api.synth("nuclei", n, folder / ".synth", size=size, seed=seed)
    return sorted((folder / ".synth" / "images").glob("*.tif"))


def _copy(paths, dest: Path, stem: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for k, p in enumerate(paths):
        shutil.copy(p, dest / f"{stem}_{k}{Path(p).suffix}")


def fx_my_images(d: Path) -> None:
    _copy(_nuclei(d / ".fx-my", 2), d / "my_images", "my_image")


def fx_images(d: Path) -> None:
    _copy(_nuclei(d / ".fx-images", 2, seed=2), d / "images", "image")


def fx_new(d: Path) -> None:
    _copy(_nuclei(d / ".fx-new", 2, seed=3), d / "new", "new")


def fx_big_zarr(d: Path) -> None:
    import tifffile
    import zarr

    img = tifffile.imread(_nuclei(d / ".fx-big", 1, size=512, seed=4)[0])
    z = zarr.create_array(str(d / "big.ome.zarr"), shape=img.shape, chunks=(256, 256), dtype=img.dtype)
    z[:] = img


def fx_rgb_png(d: Path) -> None:
    import imageio.v3 as iio
    import tifffile

    grey = tifffile.imread(_nuclei(d / ".fx-rgb", 1, seed=5)[0]).astype(np.float32)
    grey8 = np.clip(grey / max(float(grey.max()), 1.0) * 255, 0, 255).astype(np.uint8)
    iio.imwrite(d / "rgb.png", np.stack([grey8 // 4, grey8 // 3, grey8], axis=-1))  # nuclei in channel 2 (blue)


def fx_mine(d: Path) -> None:
    from napari_impc_dl import api

    api.synth("nuclei", 4, d / "mine", size=256, seed=6)


def fx_spreads(d: Path) -> None:
    from napari_impc_dl import api

    api.synth("shapes", 2, d / ".fx-spreads", seed=7)
    _copy(sorted((d / ".fx-spreads" / "images").glob("*.tif")), d / "my-spreads", "spread")


def fx_xrays(d: Path) -> None:
    from napari_impc_dl import api

    paths = api.synth("views", 2, d / ".fx-xrays", size=128, seed=8)
    (d / "xrays").mkdir()
    rows = ["path,class"]
    for k, p in enumerate(paths):
        name = f"xray_{k}.tif"
        shutil.copy(p, d / "xrays" / name)
        rows.append(f"xrays/{name},{Path(p).parent.name}")
    (d / "truth.csv").write_text("\n".join(rows) + "\n")


def fx_zoo_package(d: Path) -> None:
    """A small spec 0.5 package named like the Model Zoo's 'affable-shark' nuclei model (a stand-in: no download)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import zoo_packages

    out, _ = zoo_packages.build_v05(d / ".fx-zoo", kind="torchscript", name="affable-shark")
    shutil.copy(out, d / "affable-shark.zip")


#: what a document's commands take as the reader's own files -> how the test makes them
FIXTURES = {
    "my_images": fx_my_images,
    "images": fx_images,
    "new": fx_new,
    "big.ome.zarr": fx_big_zarr,
    "rgb.png": fx_rgb_png,
    "mine": fx_mine,
    "my-spreads": fx_spreads,
    "xrays": fx_xrays,  # and truth.csv
    "truth.csv": fx_xrays,
    "affable-shark.zip": fx_zoo_package,
}


def make_fixtures(argv: list[str], cwd: Path, made: set) -> None:
    """Make the reader's own files a command names (``my_images/*.tif`` -> ``my_images``), once per directory."""
    for a in argv:
        fn = FIXTURES.get(a.split("/", 1)[0])
        if fn is not None and fn not in made and not (cwd / a.split("/", 1)[0]).exists():
            fn(cwd)
            made.add(fn)


# --------------------------------------------------------------------------------------- running one command


def _cut_training(argv: list[str]) -> list[str]:
    """``train``: one epoch, no time limit (see the module docstring)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in ("--time-limit", "--epochs"):
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out + ["--epochs", "1"]


def _device_skip(argv: list[str]) -> str | None:
    if "--device" not in argv:
        return None
    dev = argv[argv.index("--device") + 1]
    if dev.startswith("cuda") or dev == "mps":
        import torch

        if dev.startswith("cuda") and not torch.cuda.is_available():
            return f"needs a CUDA GPU ({dev}); none here"
        if dev == "mps" and not torch.backends.mps.is_available():
            return "needs Apple silicon (mps); none here"
    return None


def _preset_skip(argv: list[str], cwd: Path) -> str | None:
    from napari_impc_dl import presets
    from napari_impc_dl.errors import InputError

    refs = [(a, argv[i + 1]) for i, a in enumerate(argv[:-1]) if a in MODEL_FLAGS]
    if argv[:2] == ["zoo", "export"] and len(argv) > 2:
        refs.append(("zoo export", argv[2]))
    for flag, ref in refs:
        if ref.lower() not in getattr(presets, "PRESETS", {}) or (flag != "--preset" and (cwd / ref).exists()):
            continue  # not a preset, or a file / folder of that name (--model, --from, ...)
        preset = presets.PRESETS[ref.lower()]
        installed = getattr(preset, "installed", None)  # all its model files (segmentation + classifier)
        if installed is False:
            files = [str(f) for f in (getattr(preset, "model_path", None), getattr(preset, "classifier_path", None)) if f is not None and not Path(f).is_file()]
            return f"preset '{ref}' is not installed yet (missing: {', '.join(files)})"
        if installed is None:
            try:
                presets.preset_path(ref)
            except InputError as exc:
                return f"preset '{ref}' is not installed yet ({exc})"
    return None


def _expand(argv: list[str], cwd: Path) -> list[str]:
    out = []
    for a in argv:
        if any(ch in a for ch in "*?[") and not a.startswith("-"):
            hits = sorted(str(Path(h).relative_to(cwd)) for h in glob.glob(str(cwd / a)))
            out += hits or [a]  # bash keeps an unmatched pattern
        else:
            out.append(a)
    return out


def run_cli(argv: list[str], cwd: Path, monkeypatch) -> tuple[int, str]:
    from napari_impc_dl import cli
    from napari_impc_dl.inference import allocator

    # main() asks glibc for one malloc arena for the process: right for the command line, not for pytest
    monkeypatch.setattr(allocator, "share_one_arena", lambda: False)
    monkeypatch.setattr(sys, "argv", ["napari-impc-dl", *argv])
    monkeypatch.chdir(cwd)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            rc = cli.main(argv)
        except SystemExit as exc:  # argparse: a wrong option
            rc = exc.code if isinstance(exc.code, int) else 1
    return rc, buf.getvalue()


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))


_WORKDIRS: dict[str, tuple[Path, set]] = {}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """PyTorch on one thread while the docs' commands run: on a machine whose cores are busy with other work,
    two spinning threads make these small runs 10-30x slower; one thread changes no result."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One working directory per document (made on first use), with the fixtures made in it so far."""

    def get(doc: str) -> tuple[Path, set]:
        if doc not in _WORKDIRS:
            _WORKDIRS[doc] = (tmp_path_factory.mktemp(re.sub(r"\W+", "-", doc)), set())
        return _WORKDIRS[doc]

    yield get
    _WORKDIRS.clear()


ALL = _all_commands()


@pytest.mark.parametrize("cmd", ALL, ids=[c.id for c in ALL])
def test_command_runs_as_written(cmd: Command, workdir, monkeypatch):
    if cmd.skip is not None:
        assert cmd.skip != "(no reason given)", f"{cmd.id}: say why the block is skipped: <!-- docs-test: skip (REASON) -->"
        pytest.skip(f"marked in {cmd.doc}: {cmd.skip}")
    prog, args = cmd.argv[0], cmd.argv[1:]
    if prog == "make":
        missing = [t for t in args if not t.startswith("-") and t not in _make_targets()]
        assert not missing, f"{cmd.id}: `{cmd.text}`: the Makefile has no target {missing}"
        return
    assert prog in CLI_NAMES, (
        f"{cmd.id}: `{cmd.text}` is neither `napari-impc-dl ...` nor `make ...`: run it here, or mark its block "
        "with <!-- docs-test: skip (REASON) --> (see tests/unit/test_docs.py)"
    )
    home, made = workdir(cmd.doc)
    monkeypatch.setenv("NAPARI_IMPC_DL_HOME", str(home / ".library"))
    for reason in (_device_skip(args), _preset_skip(args, home)):
        if reason:
            pytest.skip(reason)
    make_fixtures(args, home, made)
    if args[:1] == ["train"]:
        args = _cut_training(args)
    rc, output = run_cli(_expand(args, home), home, monkeypatch)
    assert rc == 0, f"{cmd.id}: `{cmd.text}` exited with {rc}:\n{output[-3000:]}"


def test_console_script_is_installed():
    """The docs call ``napari-impc-dl`` (or ``.venv/bin/napari-impc-dl``): the entry point is next to this Python."""
    exe = Path(sys.executable).parent / ("napari-impc-dl.exe" if os.name == "nt" else "napari-impc-dl")
    assert exe.is_file(), f"{exe} is missing: reinstall the package (make setup)"


def test_every_shell_block_is_read():
    """A sanity check of the reader itself: the docs' shell blocks yield commands, and some are run."""
    assert len([c for c in ALL if c.skip is None and c.argv[0] in CLI_NAMES]) >= 10
    for doc in RUN_DOCS:
        for b in blocks(doc):
            if b.lang in SHELL and any(s.strip() for _, s in b.lines):
                assert any(c.doc == doc and b.line <= c.line <= b.line + len(b.lines) for c in ALL), f"{doc}:{b.line}: no command read"


# --------------------------------------------------------------------------------------- images and links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    s = "".join(ch for ch in s if ch in " -" or unicodedata.category(ch)[0] in "LN")
    return s.replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)}


@pytest.mark.parametrize("doc", LINK_DOCS)
def test_images_and_links_exist(doc):
    path = ROOT / doc
    if not path.is_file():
        pytest.skip(f"{doc} does not exist")
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    bad = []
    for image, target in re.findall(r"(!?)\[[^\]]*\]\(\s*([^)\s]+)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("mailto:"):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            bad.append(f"{'image' if image else 'link'} {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"link {target}: no heading with that anchor in {dest.name}")
    assert not bad, f"{doc}: " + "; ".join(bad)
    images = re.findall(r"!\[[^\]]*\]\(\s*([^)\s]+)", text)
    if doc == "docs/user-guide.md":
        assert len(images) >= 8, images
