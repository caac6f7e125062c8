"""docs/cli.md is the parser, written out: regenerate it in memory from the current parser and compare."""

from __future__ import annotations

import difflib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIX = "run `.venv/bin/python scripts/make_cli_docs.py` and commit docs/cli.md"


def _script():
    spec = importlib.util.spec_from_file_location("make_cli_docs", ROOT / "scripts" / "make_cli_docs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_cli_docs", mod)
    spec.loader.exec_module(mod)
    return mod


def test_cli_reference_matches_the_parser():
    want = _script().render()
    path = ROOT / "docs" / "cli.md"
    assert path.is_file(), f"docs/cli.md is missing: {FIX}"
    have = path.read_text(encoding="utf-8")
    if have != want:
        diff = "".join(list(difflib.unified_diff(have.splitlines(True), want.splitlines(True), "docs/cli.md", "parser"))[:60])
        raise AssertionError(f"docs/cli.md and the command-line parser disagree: {FIX}\n{diff}")


def test_every_verb_and_option_is_in_the_reference():
    """The generator itself walks every subparser and option (guards the walk, not just the file)."""
    import argparse

    from napari_impc_dl.cli import build_parser

    text = _script().render()
    seen = 0

    def walk(p: argparse.ArgumentParser, prog: str) -> None:
        nonlocal seen
        assert f" {prog}\n" in text or prog == p.prog == "napari-impc-dl", prog
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, f"{prog} {name}")
            elif a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction):
                assert max(a.option_strings, key=len) in text, (prog, a.option_strings)
                seen += 1

    walk(build_parser(), "napari-impc-dl")
    assert seen > 50
