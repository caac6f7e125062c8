#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv — idempotent and quick when nothing changed.
#   torch 2.14.1 + torchvision 0.29.1 first (the pair that imports together), then the package (editable) with
#   its gui, zoo, onnx, distributed and test extras, pinned by requirements/constraints.txt. The Qt binding is PyQt6; a PyQt5
#   left from an older setup is removed (qtpy would pick it first, and napari 0.9 warns that PyQt5 is deprecated).
#   `scripts/setup.sh qt5` also puts PyQt5 (requirements/qt5.txt) in .venv/qt5, apart, for `make test-qt5`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
stamp=.venv/.setup-stamp
sha() { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi; }  # macOS has only shasum
want="$(cat pyproject.toml requirements/constraints.txt scripts/setup.sh | sha | cut -c1-16)"
if ! { [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "setting up .venv (first time: a few minutes)..." >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip wheel setuptools
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[gui,zoo,onnx,distributed,test]"
  if .venv/bin/python -m pip show -q PyQt5 >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y PyQt5 PyQt5-Qt5 PyQt5-sip
  fi
  echo "$want" > "$stamp"
fi
if [ "${1:-}" = qt5 ]; then
  # PyQt5 only, in a folder of its own: test.sh puts it first on PYTHONPATH with QT_API=pyqt5 (.venv keeps PyQt6)
  want5="$(cat requirements/qt5.txt | sha | cut -c1-16)"
  if [ ! -f .venv/qt5/.stamp ] || [ "$(cat .venv/qt5/.stamp)" != "$want5" ]; then
    echo "installing PyQt5 into .venv/qt5..." >&2
    rm -rf .venv/qt5
    .venv/bin/python -m pip install -q --no-deps --target .venv/qt5 -r requirements/qt5.txt
    echo "$want5" > .venv/qt5/.stamp
  fi
fi
