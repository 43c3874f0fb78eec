# The two set-up-and-run commands (see README):
#   make demo  - create .venv if missing, install, run the default study, print the report path
#   make test  - create .venv if missing, install, run the test suite (slow end-to-end tests included), one
#                single-threaded worker per core (pytest-xdist, work stealing; README "Measured figures")
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_ARGS ?= -m "slow or not slow"

.PHONY: demo test install bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 is the CPU build this machine keeps locally (an unpinned torch would pull CUDA wheels);
# an environment that already has a torch keeps its own.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/medrobust study configs/quick.yaml

test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist worksteal $(TEST_ARGS)

bench: install
	$(PY) benchmarks/train_loop_overhead.py
	$(PY) benchmarks/attack_overhead.py

clean:
	rm -rf $(VENV) results .pytest_cache
