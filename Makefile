# Common verbs. Everything runs inside .venv, built from requirements.lock on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run test lint fmt bench bench-full demo newman lock clean

$(STAMP):
	@echo "» building .venv from requirements.lock (first run only, ~30 s)"
	@rm -f $(VENV)/.installed-*
	@$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

run: install ## PostgreSQL + Valkey (embedded unless URLs are set), the API and WORKERS workers, supervised
	@$(PY) -m devstack run

test: install ## the whole suite against real servers (embedded unless TEST_*_URL are set)
	@$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache

fmt: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: install ## quick benchmarks (a few minutes); results in bench/results/
	@$(PY) -m bench $(BENCH_ARGS)

bench-full: install
	@$(PY) -m bench --full $(BENCH_ARGS)

demo: install ## watch a few orders execute on the API `make run` serves (follows PORT)
	@$(PY) demo.py $(DEMO_ARGS)

newman: ## run the Postman collection against a running server (BASE_URL)
	@bash scripts/newman.sh

lock: ## re-resolve requirements.lock from pyproject.toml
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install -q --disable-pip-version-check '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^order-execution-engine' > requirements.lock
	rm -rf .lockenv build *.egg-info

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
