# Two commands on a fresh machine: `make demo` and `make test`. Both install into .venv first, idempotently:
# the install stamp depends on pyproject.toml, so a second run installs nothing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed first so that the dependency range does not pull a multi-GB CUDA build.
# GPU users: `make install TORCH="torch==2.13.0 --index-url <your index>"` or any build they already have.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.llmctl-installed

export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo test test-all bench clean data

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded corpus: preprocess -> pretrain (ends with sampled continuations) -> eval.
# A second `make demo` starts the run over (--overwrite); preprocessing is reused from its cache.
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/llmctl preprocess recipes/gpt-small.toml
	HF_HUB_OFFLINE=1 $(BIN)/llmctl pretrain recipes/gpt-small.toml --overwrite
	HF_HUB_OFFLINE=1 $(BIN)/llmctl eval --metric perplexity --model runs/gpt-small/final --data runs/gpt-small/data/validation --output runs/gpt-small/eval.json

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Includes the tests marked slow (multi-process, the demo-sized runs).
test-all: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m ''

# All benchmarks, or some: `make bench BENCH="compress serve"` (names: python tests/bench.py --help).
bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python tests/bench.py $(BENCH)

# Regenerates the embedded data; the output is byte-identical on every run.
data:
	$(PYTHON) data/generate.py

clean:
	rm -rf $(VENV) runs .pytest_cache
