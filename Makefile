# The two commands of the README: `make demo` and `make test`.
# Each creates .venv when missing and installs the project into it with pip.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.chexviz-installed
# OpenMP's busy-waiting starves the other core on a shared 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE
# mkdocs-material prints a banner about MkDocs 2 on every build.
export NO_MKDOCS_2_WARNING ?= 1
# Where torch and torchvision come from. Empty (the default): what pip picks, which on Linux
# means the CUDA wheels (several GB). On a machine without a GPU, the CPU-only wheels are a
# fraction of that: make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=

.PHONY: demo test bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX_URL),$(PY) -m pip install --quiet --index-url $(TORCH_INDEX_URL) torch torchvision)
	$(PY) -m pip install --quiet -e ".[dev,docs,dicom]"
	$(PY) -m pip install --quiet -e tests/plugin
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/chexviz demo --out demo-out

test: $(STAMP)
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks
	$(VENV)/bin/mypy --strict src
	$(PY) -m pytest
	$(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# The GPU path end to end on one CUDA GPU (benchmarks/gpu_check.py; at most 8 minutes).
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py --device cuda --report gpu-check.json

clean:
	rm -rf $(VENV) site demo-out gpu-check.json .mypy_cache .ruff_cache .pytest_cache .hypothesis
