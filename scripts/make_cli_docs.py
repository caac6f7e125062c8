"""Write docs/cli.md, the command-line reference, from the argparse parser in ``napari_impc_dl.cli``.

    .venv/bin/python scripts/make_cli_docs.py            # rewrite docs/cli.md
    .venv/bin/python scripts/make_cli_docs.py --check    # exit 1 if docs/cli.md is out of date

Every verb and sub-verb gets a section: its help line, a usage line, and a table with each argument,
its meaning (the parser's help, choices, what it excludes) and its default. The usage lines are made
here rather than by argparse, so the file does not change with the Python version.
``tests/unit/test_cli_docs.py`` fails when the file and the parser disagree: rerun this script after
changing the parser, and commit docs/cli.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli.md"
WIDTH = 100

HEADER = """\
# Command-line reference

<!-- Generated from the parser in src/napari_impc_dl/cli.py by scripts/make_cli_docs.py: do not edit by hand.
     tests/unit/test_cli_docs.py fails when this file and the parser disagree. -->

`napari-impc-dl` is installed with the package (in a clone set up with `make setup`: `.venv/bin/napari-impc-dl`).
Each command calls one function of `napari_impc_dl.api`, the same functions the napari widgets call.
Every command takes `-h` / `--help`; `napari-impc-dl --version` prints the version.

Exit status: 0 on success; 2 for bad input (one line on stderr: what is wrong and what to do; nothing
written); 130 when cancelled with Ctrl-C (no partial outputs left); `zoo test` exits 1 when the package
fails its own test.
"""


def _subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)


def _commands(p: argparse.ArgumentParser, prog: str) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(full command, help line, parser) for every verb under ``p``, depth first, in the parser's order."""
    sp = _subparsers(p)
    if sp is None:
        return []
    helps = {a.dest: a.help or "" for a in sp._choices_actions}
    out = []
    for name, sub in sp.choices.items():
        full = f"{prog} {name}"
        out.append((full, helps.get(name, ""), sub))
        out += _commands(sub, full)
    return out


def _shown(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if a.help != argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _metavar(a: argparse.Action) -> str:
    if a.metavar is not None:
        return a.metavar if isinstance(a.metavar, str) else " ".join(a.metavar)
    if a.choices is not None:
        return "{" + ",".join(str(c) for c in a.choices) + "}"
    return a.dest.upper() if a.option_strings else a.dest


def _spelling(a: argparse.Action) -> str:
    """How an argument is written: ``--out DIR``, ``--force``, ``INPUT [INPUT ...]``."""
    m = _metavar(a)
    if a.nargs == 0:
        return a.option_strings[-1] if a.option_strings else m
    args = {None: m, "?": f"[{m}]", "*": f"[{m} ...]", "+": f"{m} [{m} ...]"}.get(a.nargs, " ".join([m] * a.nargs) if isinstance(a.nargs, int) else m)
    if not a.option_strings:
        return args
    flag = max(a.option_strings, key=len)
    return f"{flag} {args}"


def _usage(full: str, p: argparse.ArgumentParser) -> str:
    groups = {id(a): g for g in p._mutually_exclusive_groups for a in g._group_actions}
    parts, done = [], set()
    for a in _shown(p):
        if id(a) in done:
            continue
        g = groups.get(id(a))
        if g is not None:
            members = [m for m in g._group_actions if m.help != argparse.SUPPRESS]
            done.update(id(m) for m in members)
            text = " | ".join(_spelling(m) for m in members)
            parts.append(f"({text})" if g.required else f"[{text}]")
        elif a.option_strings and not a.required:
            parts.append(f"[{_spelling(a)}]")
        else:
            parts.append(_spelling(a))
    sp = _subparsers(p)
    if sp is not None:
        parts.append(f"{sp.metavar or sp.dest.upper()} ...")
    lines = [full]
    for part in parts:  # wrap between arguments, never inside one
        if len(lines[-1]) + 1 + len(part) > WIDTH and lines[-1].strip() != full:
            lines.append("    " + part)
        else:
            lines[-1] += " " + part
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(a: argparse.Action) -> str:
    if a.required:
        return "required"
    if a.nargs == 0:
        return ""
    d = a.default
    if d is None or d is argparse.SUPPRESS:
        return ""
    if isinstance(d, (list, tuple)):
        d = " ".join(str(x) for x in d)
    return f"`{d}`"


def _meaning(p: argparse.ArgumentParser, a: argparse.Action) -> str:
    text = p._get_formatter()._expand_help(a) if a.help else ""
    extra = []
    if a.choices is not None and a.metavar is not None:
        extra.append("one of " + ", ".join(f"`{c}`" for c in a.choices))
    elif a.choices is not None and not text:
        extra.append("one of " + ", ".join(f"`{c}`" for c in a.choices))
    for g in p._mutually_exclusive_groups:
        if a in g._group_actions:
            others = [max(m.option_strings, key=len) for m in g._group_actions if m is not a and m.option_strings]
            if others:
                extra.append("not with " + ", ".join(f"`{o}`" for o in others))
    return "; ".join(x for x in [text, *extra] if x)


def _section(full: str, help_line: str, p: argparse.ArgumentParser) -> str:
    depth = full.count(" ")
    lines = [f"{'#' * min(depth + 1, 4)} {full}", ""]
    if help_line:
        lines += [help_line[0].upper() + help_line[1:] + ("" if help_line.endswith(".") else "."), ""]
    if p.description:
        lines += [p.description, ""]
    lines += ["```text", _usage(full, p), "```", ""]
    rows = [a for a in _shown(p)]
    if rows:
        lines += ["| argument | meaning | default |", "|---|---|---|"]
        for a in rows:
            lines.append(f"| `{_cell(_spelling(a))}` | {_cell(_meaning(p, a))} | {_cell(_default(a))} |")
        lines.append("")
    sp = _subparsers(p)
    if sp is not None:
        helps = {c.dest: c.help or "" for c in sp._choices_actions}
        lines += [f"{sp.metavar or sp.dest.upper()}: one of", ""]
        for name in sp.choices:
            anchor = f"{full} {name}".replace(" ", "-").lower()
            lines.append(f"- [`{name}`](#{anchor}): {helps.get(name, '')}")
        lines.append("")
    return "\n".join(lines)


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The whole of docs/cli.md for ``parser`` (default: the CLI's current parser)."""
    if parser is None:
        from napari_impc_dl.cli import build_parser

        parser = build_parser()
    prog = parser.prog
    cmds = _commands(parser, prog)
    toc = []
    for full, help_line, _ in cmds:
        depth = full.count(" ") - 1
        toc.append(f"{'  ' * depth}- [`{full}`](#{full.replace(' ', '-').lower()}): {help_line}")
    parts = [HEADER, "\n".join(toc), ""]
    top = _shown(parser)
    if top:
        parts += [f"## {prog}", "", parser.description or "", "", "```text", _usage(prog, parser), "```", "",
                  "| argument | meaning | default |", "|---|---|---|",
                  *[f"| `{_cell(_spelling(a))}` | {_cell(_meaning(parser, a))} | {_cell(_default(a))} |" for a in top], ""]
    parts += [_section(full, help_line, sub) for full, help_line, sub in cmds]
    return "\n".join(parts).rstrip("\n") + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if docs/cli.md is out of date")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    text = render()
    out = Path(args.out)
    if args.check:
        same = out.is_file() and out.read_text(encoding="utf-8") == text
        print(f"{out}: {'up to date' if same else 'out of date: run scripts/make_cli_docs.py'}")
        return 0 if same else 1
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
