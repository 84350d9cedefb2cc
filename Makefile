# prunebench: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A CPU build of this torch lies on the project machines' disk; elsewhere `make TORCH=torch`.
TORCH  ?= torch==2.13.0
FMNIST ?= /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test test-slow install dev data lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

# Fashion-MNIST from Debian's package when apt is there and the data is not.
data:
	@if [ ! -f "$(FMNIST)" ] && [ -z "$$PRUNEBENCH_DATA" ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; }; \
	fi

# The lr-effect study's CPU preset (the paper's Mystery 1): a table and runs/demo/report.html.
# CPU results depend on the number of torch threads and on the vector instructions the
# kernels use (an AVX-512 machine rounds differently from an AVX2 one, and the high-ratio,
# small-LR cells amplify it by several points): both pinned, so the README's numbers
# reproduce on any x86-64 machine with AVX2.
DEMO_THREADS ?= 2
DEMO_ENV = OMP_NUM_THREADS=$(DEMO_THREADS) MKL_NUM_THREADS=$(DEMO_THREADS) \
	ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2
demo: install data
	$(DEMO_ENV) $(BIN)/prunebench study lr-effect --preset cpu --out runs/demo

# Every number of docs/findings.md and the README's demo block, from the five CPU presets
# (about an hour on 2 busy cores; finished cells are reused). FINDINGS_ARGS="--seeds 1" for less.
.PHONY: findings
FINDINGS_ARGS ?= --seeds 2
findings: install data
	$(BIN)/python scripts/findings.py --out runs/findings $(FINDINGS_ARGS)

# ruff first: CI fails on lint, so the test command catches it before a commit does.
test: dev data
	$(BIN)/ruff check .
	$(BIN)/pytest

# End-to-end runs (minutes): `make demo` itself among them. CI runs these too.
test-slow: dev data
	$(BIN)/pytest -m slow

lint: dev
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
