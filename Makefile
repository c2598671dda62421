# The two commands of the README. Both install what is missing first (scripts/setup.sh).
.PHONY: demo test quick setup lint bench

setup:
	@scripts/setup.sh

demo: setup
	.venv/bin/moviegen run catalogs/demo.parquet --out out

# The tests also need Debian's chromium (the report test opens a run's report in a headless browser).
test:
	@scripts/setup.sh --test
	.venv/bin/ruff check .
	.venv/bin/lint-imports  # import direction: pyproject.toml [tool.importlinter]
	.venv/bin/pytest

quick: setup
	.venv/bin/pytest -m "not slow"

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports

bench: setup
	.venv/bin/python benchmarks/run_all.py
