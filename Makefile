# Two doors for a newcomer: `make demo` (set up + segment the bundled sample) and `make test` (set up + all tests, headless).
.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/napari-impc-dl demo --out demo-output

test:
	@bash scripts/test.sh

bench: setup
	.venv/bin/python benchmarks/bench_inference.py

clean:
	rm -rf demo-output .pytest_cache
