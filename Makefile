# Two commands for a fresh checkout: `make demo` and `make test`. Both create .venv when it is missing
# and refresh it when pyproject.toml changed (the stamp file records the last install). `make test` also makes sure
# PostgreSQL's server programs exist (scripts/ensure-postgres.sh installs Debian's when missing): the suite starts
# its own throwaway server with them. pytest runs on two workers (pytest-xdist): the slow end-to-end suites wait on
# subprocesses, HTTP and PostgreSQL much of the time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test reliability bench docs dev venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/metronome-suger demo

test: $(STAMP)
	$(BIN)/ruff check metronome_suger metronome_suger_tests benchmarks scripts
	$(BIN)/mypy metronome_suger
	bash scripts/ensure-postgres.sh
	bash scripts/ensure-chromium.sh
	$(BIN)/python -m pytest -n 2 --dist worksteal

# The reliability suites alone (crashes, fault matrix, bad input, soak, secrets), with their figures written
# into README.md's "Reliability" table by scripts/reliability_table.py. `make test` runs the same suites.
reliability: $(STAMP)
	bash scripts/ensure-postgres.sh
	rm -f .reliability.jsonl .reliability.xml
	METRONOME_SUGER_FIGURES=$(CURDIR)/.reliability.jsonl $(BIN)/python -m pytest -n 2 --dist worksteal \
		-m reliability --junitxml=.reliability.xml
	$(BIN)/python scripts/reliability_table.py .reliability.jsonl .reliability.xml README.md

# The issue-12 benchmark (benchmarks/bench.py, described in benchmarks/README.md): each billing mode's window against
# emulators in their own processes with 20 ms per request, compared with the round-trip bound; then the
# micro-benchmarks and the DuckDB size. ~6-7 min with its defaults (2,000 customers x 20 metrics: the issue's 10,000
# take ~30 min here). Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--customers 10000 --size-customers 1000";
# --write-readme rewrites README.md's Performance table.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# README.md's "Configuration reference", generated from the configuration model's field descriptions
# (metronome_suger/docs.py); `python -m metronome_suger.docs` without --write only checks it (exit 1 and a diff
# when stale), as metronome_suger_tests/test_docs.py does.
docs: $(STAMP)
	$(BIN)/python -m metronome_suger.docs --write

dev: $(STAMP)
	$(BIN)/metronome-suger dev

clean:
	rm -rf $(VENV) data .dagster_home
