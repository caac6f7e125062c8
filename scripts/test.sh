#!/usr/bin/env bash
# Run the whole test suite headless: installs the X/GL libraries napari needs (Debian, when root and missing),
# then runs pytest under a virtual X server. Extra arguments go to pytest.
#   Qt binding: .venv's PyQt6; with IMPC_QT=pyqt5 (`make test-qt5`), PyQt5 from .venv/qt5 instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${IMPC_QT:-pyqt6}" = pyqt5 ]; then
  bash scripts/setup.sh qt5
  export PYTHONPATH="$PWD/.venv/qt5${PYTHONPATH:+:$PYTHONPATH}" QT_API=pyqt5 PYTEST_QT_API=pyqt5
else
  bash scripts/setup.sh
fi
pkgs="xvfb xauth libgl1 libglx-mesa0 libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxcb-shape0 libglib2.0-0 libfontconfig1 libdbus-1-3"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing system packages:$missing" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "missing system packages:$missing (run: sudo apt-get install -y$missing)" >&2
    exit 1
  fi
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_CACHE_HOME="$tmp/cache" MPLCONFIGDIR="$tmp/mpl"
export QT_QPA_PLATFORM=xcb BIOIMAGEIO_PERFORM_IO_CHECKS=false PYTHONDONTWRITEBYTECODE=1
.venv/bin/python -c "import sys, qtpy, qtpy.QtCore as c; print(f'Qt binding: {qtpy.API_NAME} {qtpy.PYQT_VERSION or qtpy.PYSIDE_VERSION} (Qt {c.qVersion()})'); sys.exit(qtpy.API_NAME.lower() != '${IMPC_QT:-pyqt6}')" \
  || { echo "wanted the Qt binding ${IMPC_QT:-pyqt6}" >&2; exit 1; }
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest "$@"
