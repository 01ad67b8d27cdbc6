# The README's commands. Everything runs inside .venv, created on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/dagster_home
export TWOBRANCH_DATA ?= $(CURDIR)/data

.PHONY: install run test ui bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

DATASET ?= synthetic

run: $(STAMP)
	$(BIN)/twobranch dataset sync
	$(BIN)/dagster job execute -m assets.definitions -j full_pipeline -c configs/synthetic_demo.yaml \
		--tags '{"dagster/partition": "$(DATASET)"}'
	$(BIN)/twobranch summary --dataset $(DATASET)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

ui: $(STAMP)
	$(BIN)/dagster dev -m assets.definitions -h 127.0.0.1 -p 3000

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) data dagster_home/storage dagster_home/logs dagster_home/history
