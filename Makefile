# Fanpin: `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-unit lint bench bench-check soak bench-web detection clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## Install the Python environment and fetch the Kafka jars
	@bash scripts/install.sh

demo: install ## Run everything on embedded defaults with the bundled sample; Ctrl-C stops
	$(VENV)/bin/fanpin demo

test: ## Install everything (incl. PostgreSQL, Chromium) and run the whole test suite
	@bash scripts/install.sh --test
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

test-unit: install ## Only the fast tiers: unit and stream tests
	$(PY) -m pytest tests/unit tests/stream $(PYTEST_ARGS)

lint: install ## ruff and mypy, as configured in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install ## Benchmarks against baselines run alongside (~20 min); writes docs/benchmarks.md
	$(PY) -m fanpin.bench --out docs/benchmarks.md

bench-check: install ## Fail when the detector is below 5x a plain Faust agent with a Table
	$(PY) -m fanpin.bench --check 5

soak: install ## 10-minute load test at 2× the benchmark's steady rate: lag and memory over time; writes docs/soak.md
	$(PY) -m fanpin.soak --out docs/soak.md

bench-web: install ## 1M entries in PostgreSQL: list-page and API latency (~30 min); writes docs/benchmarks-web.md
	$(PY) -m fanpin.bench_web --out docs/benchmarks-web.md

detection: install ## Detection quality on 20 unseen simulated scenarios vs both anchors; writes docs/detection.md
	$(PY) scripts/detection_report.py

clean: ## Stop the local broker and remove var/ (broker data, watch list, logs)
	-$(VENV)/bin/fanpin broker stop
	rm -rf var
