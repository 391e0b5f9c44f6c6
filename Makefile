# Set-up and entry points. Every target installs what it needs into $(VENV) first,
# with constraints.txt pinning torch to the local CPU wheel.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The reference venv: the real `adapters` package on transformers 4.57 (tools/make_reference_venv.sh).
REF_VENV := .venv-ref
# What `make test` (and so CI) selects: the default suite plus the slow tests marked `ci` (README, "Tests").
CI_TESTS := not slow or ci

.PHONY: install ref-venv demo lint test test-slow bench bench-smoke fixtures

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[test,demo,train]'
	touch $@

ref-venv: $(REF_VENV)/.installed

$(REF_VENV)/.installed: tools/make_reference_venv.sh tools/ref-constraints.txt
	bash tools/make_reference_venv.sh
	touch $@

demo: install
	$(VENV)/bin/adapterkit train $(ARGS)

# ADAPTERKIT_CI=1: a `ci` test that skips fails instead (tests/conftest.py), so CI never passes without running them.
test: install lint ref-venv
	ADAPTERKIT_CI=1 $(PY) -m pytest -q -m "$(CI_TESTS)" $(ARGS)

lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check src tests benchmarks tools

test-slow: install ref-venv
	$(PY) -m pytest -q -m slow $(ARGS)

bench: install
	$(PY) benchmarks/run_all.py $(ARGS)

bench-smoke: install
	$(PY) benchmarks/run_all.py --tiny --rounds 1 --warmup 0 --scaling-rounds 1 --memory-steps 1 $(ARGS)

fixtures:
	bash tools/make_reference_fixtures.sh
	.venv-ref/bin/python tools/make_head_fixtures.py
	.venv-ref/bin/python tools/make_adapterhub_fixtures.py
	.venv-ref/bin/python tools/make_composition_fixtures.py
	.venv-ref/bin/python tools/make_average_fixtures.py
	.venv-ref/bin/python tools/make_average_head_fixtures.py  # after make_head_fixtures: it reuses its BERT
