#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv — idempotent and quick when nothing changed.
#   torch 2.14.1 + torchvision 0.29.1 first (the pair that imports together), then the package (editable) with
#   its gui, zoo, onnx and test extras, pinned by requirements/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
stamp=.venv/.setup-stamp
sha() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi; }  # macOS has only shasum
want="$(cat pyproject.toml requirements/constraints.txt scripts/setup.sh | sha | cut -c1-16)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up .venv (first time: a few minutes)..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip wheel setuptools
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[gui,zoo,onnx,test]"
echo "$want" > "$stamp"
