# videogn: `make train` runs the main job, `make test` runs the test suite, `make dist` builds the
# sdist and wheel (configs included, as videogn.configs) into dist/.
# Each creates .venv and installs everything on first use (a fresh machine needs only python3;
# about 5.9 GB, mostly the CUDA libraries of torch).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CUDA build of torch runs on CPU too; pinned to the releases this project is tested with.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.videogn-installed
PYTEST_ARGS ?=

.PHONY: setup train test test-slow bench dist clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/videogn-train

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --timeout 900 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow --timeout 3600 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench_groupnorm.py

dist: $(STAMP)
	$(BIN)/python -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) .pytest_cache outputs build dist
