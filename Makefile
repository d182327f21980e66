# mibench: `make run` (default benchmark), `make test` (pytest), `make test-fast` (tests not marked slow),
# `make bench` (speed vs raw PyTorch; vectorised sweeps vs one run at a time), `make install-bmi` (a second
# venv with the Beyond-Normal extra). Each venv installs its exact tested set: requirements/lock.txt, requirements/bmi.txt.
PYTHON   ?= python3.11
VENV     ?= .venv
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
BMI_VENV ?= .venv-bmi
BMI_PY   := $(BMI_VENV)/bin/python
BMI_STAMP := $(BMI_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install install-bmi check-install run test test-fast test-drift test-slurm bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(PY) $(BMI_PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (mibench needs Python 3.11; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(patsubst %/bin/python,%,$@)

$(STAMP): pyproject.toml requirements/lock.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/lock.txt -e ".[test]"
	touch $(STAMP)

$(BMI_STAMP): pyproject.toml requirements/bmi.txt | $(BMI_PY)
	$(BMI_PY) -m pip install --quiet --upgrade pip
	$(BMI_PY) -m pip install --quiet -c requirements/bmi.txt -e ".[bmi,test]"
	touch $(BMI_STAMP)

install: $(STAMP)  ## create .venv and install mibench with its tested dependencies (requirements/lock.txt)

install-bmi: $(BMI_STAMP)  ## create .venv-bmi with the Beyond-Normal extra, mibench[bmi] (requirements/bmi.txt: numpy 1.26, pandas 1.5)

CHECK_PYTHON ?= $(shell PYENV_VERSION=3.12.1 pyenv which python 2>/dev/null || command -v python3.12)

check-install:  ## resolve `pip install -e .` on Python 3.12 against the lock minus torch (dry run: metadata only, no wheel downloaded)
	@test -n "$(CHECK_PYTHON)" || { echo "make: no Python 3.12 found (set CHECK_PYTHON=/path/to/python3.12)"; exit 1; }
	rm -rf .venv-check && $(CHECK_PYTHON) -m venv .venv-check && .venv-check/bin/python -m pip install --quiet --upgrade pip
	grep -v '^torch==' requirements/lock.txt > .venv-check/constraints.txt
	.venv-check/bin/python -m pip install --quiet --dry-run --ignore-installed --report .venv-check/report.json \
	  -c .venv-check/constraints.txt -e ".[test]"
	.venv-check/bin/python -c "import json; r = json.load(open('.venv-check/report.json')); \
	  v = {i['metadata']['name'].lower(): i['metadata']['version'] for i in r['install']}; \
	  print('Python', r['environment']['python_version'], '->', len(v), 'packages:', ', '.join(f'{k} {v[k]}' for k in ('mibench', 'torch', 'lightning', 'hydra-core', 'numpy', 'pandas') if k in v))"

run: $(STAMP)  ## run the default benchmark (Gaussian staircase, InfoNCE, separable critic, CPU)
	$(PY) -m mibench

test: $(STAMP)  ## run the test suite (2 worker processes, one thread each: pytest-xdist)
	$(PY) -m pytest -q -n 2

test-fast: $(STAMP)  ## the fast tests for the edit loop (< 60 s)
	$(PY) -m pytest -q -n 2 -m "not slow"

DRIFT_CAPABILITY ?= default
test-drift: $(STAMP)  ## the goldens and calibrated tolerance tests again on another CPU kernel path (ATEN_CPU_CAPABILITY=default: a stand-in for another CPU)
	ATEN_CPU_CAPABILITY=$(DRIFT_CAPABILITY) $(PY) -m pytest -q -n 2 -m drift -p no:cacheprovider

test-slurm: $(STAMP)  ## sweeps on a one-node SLURM started on localhost: time limits, a preemption, a scancel, one job per vectorised group, the preflight (skips if SLURM cannot run here)
	@scratch=$$(mktemp -d /tmp/mibench-slurm.XXXXXX); \
	trap 'tests/slurm/cluster.sh stop "$$scratch"; rm -rf "$$scratch"' EXIT; \
	line=$$(tests/slurm/cluster.sh start "$$scratch"); rc=$$?; \
	if [ $$rc -eq 77 ]; then echo "make test-slurm: skipped: $$line"; exit 0; fi; \
	if [ $$rc -ne 0 ]; then echo "$$line"; echo "make test-slurm: cluster.sh start failed ($$rc), logs:"; tail -n 20 "$$scratch"/log/*.log; exit $$rc; fi; \
	eval "$$line"; echo "make test-slurm: SLURM_CONF=$$SLURM_CONF"; \
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -s -p no:cacheprovider tests/slurm/test_slurm_sweep.py \
	    tests/test_vectorized_slurm.py::test_real_slurm_one_job_per_group \
	    tests/test_vectorized_slurm.py::test_local_executor_one_process_per_group; rc=$$?; \
	if [ $$rc -ne 0 ]; then tail -n 20 "$$scratch"/log/slurm*.log; fi; exit $$rc

bench: $(STAMP)  ## time the staircase and the SLB step through mibench vs a raw PyTorch loop, and vectorised sweeps vs one run at a time (prints the ratios)
	$(PY) -W ignore bench/staircase_speed.py --repeats 3
	$(PY) -W ignore bench/slb_speed.py --repeats 3
	$(PY) -W ignore bench/vectorized_speed.py --repeats 1

clean:  ## remove the venvs and caches (runs/ is kept)
	rm -rf $(VENV) $(BMI_VENV) .venv-check .pytest_cache build *.egg-info
