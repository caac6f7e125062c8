# Two doors for a newcomer: `make demo` (set up + segment the bundled sample) and `make test` (set up + all tests, headless).
# `make test` runs on PyQt6 (.venv); `make test-qt5` runs the GUI tests again on PyQt5 (from .venv/qt5).
.PHONY: setup demo test test-qt5 bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/napari-impc-dl demo --out demo-output

test:
	@bash scripts/test.sh

test-qt5:
	@IMPC_QT=pyqt5 bash scripts/test.sh tests/gui

bench: setup
	.venv/bin/python benchmarks/bench_inference.py

clean:
	rm -rf demo-output .pytest_cache
