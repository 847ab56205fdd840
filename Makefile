# svblur: `make train` and `make test` do all set-up on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch pair the project is tested with (installed first, so that no
# dependency can pull a different, multi-GB build). Override for other platforms.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.svblur-installed
ARGS ?=
# pytest-xdist processes of `make test` (each test file runs in one; 0: no extra process)
TEST_WORKERS ?= 2
# comparison preset of `make compare` (conf/compare/<PRESET>.yaml)
PRESET ?= small

.PHONY: install train test test-slow test-all lint format bench clean compare figures gpu-check docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[dev,onnx,depth,iqa]"
	$(BIN)/python -m pip install --no-deps "pyiqa==0.1.16"
	touch $(STAMP)

install: $(STAMP)

train: install
	$(BIN)/svblur-train $(ARGS)

compare: install
	$(BIN)/svblur-compare preset=$(PRESET) $(ARGS)

test: install
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(ARGS)

test-all: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: install
	$(BIN)/python benchmarks/defocus_speed.py
	$(BIN)/python benchmarks/cmos_speed.py
	$(BIN)/python benchmarks/throughput.py

# docs/predict_example.png: stage 1 (make train's job), a short stage 2 and 3, then the picture
figures: install
	$(BIN)/python docs/figures.py $(ARGS)

# the documentation site (mkdocs.yml): docs/ pages and the API reference, built into site/
docs: install
	$(BIN)/mkdocs build --strict

# on a machine with a GPU: the readiness checks (about 8 minutes), one table
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache logs
