# LiveSPT: the two commands a new user runs are `make demo` and `make test`.
# Both create .venv and install what they need themselves.
#
# torch is installed first from TORCH_SPEC so that a CPU wheel is used by default;
# with a GPU, install your own CUDA build into .venv (or override, e.g.
# `make test TORCH_SPEC="torch==2.13.0 --index-url <your wheel index>"`).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
OUT ?= demo_out
# andi-datasets' own environment (see install-thirdparty)
THIRDPARTY_VENV ?= .venv-thirdparty

.PHONY: demo test lint typecheck bench proto install install-dev clean fiji eval-vit train-vit \
	accuracy install-validation install-thirdparty localizer-report

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## Run the main job on an embedded default (prints a table, writes $(OUT)/).
demo: $(VENV)/.installed
	$(BIN)/livespt demo --out $(OUT)

## Lint, type-check and run the whole test suite.
test: $(VENV)/.installed-dev $(VENV)/.installed-validation $(THIRDPARTY_VENV)/.installed
	$(BIN)/ruff check livespt models server tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check livespt models server tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# Third-party simulators for tests/test_thirdparty.py and `make accuracy` (issue 10):
# DeepTrack2 into .venv (the `validation` extra); andi-datasets, which pins numpy<=1.26.4,
# into its own environment (ignored by git through its own .gitignore), whose generator
# script writes .npz files the harness reads (benchmarks/accuracy/andi_generate.py).
$(VENV)/.installed-validation: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[validation]'
	touch $@

$(THIRDPARTY_VENV)/.installed: benchmarks/accuracy/requirements-thirdparty.txt
	$(PYTHON) -m venv $(THIRDPARTY_VENV)
	echo '*' > $(THIRDPARTY_VENV)/.gitignore
	$(THIRDPARTY_VENV)/bin/pip install -q -r benchmarks/accuracy/requirements-thirdparty.txt
	touch $@

install-validation: $(VENV)/.installed-validation

install-thirdparty: $(THIRDPARTY_VENV)/.installed

## Accuracy on our simulator, DeepTrack2, andi-datasets and a real movie side by side
## (docs/accuracy.md, docs/accuracy/*.png, benchmarks/results/accuracy.json; < 10 min on 2 cores).
accuracy: $(VENV)/.installed-validation $(THIRDPARTY_VENV)/.installed
	$(BIN)/python -m benchmarks.accuracy.report --out docs/accuracy.md --json benchmarks/results/accuracy.json

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[bench]'
	touch $@

## Reproducible benchmarks; JSON results under benchmarks/results/.
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench_simulate.py --out benchmarks/results/simulate.json
	$(BIN)/python benchmarks/bench_detect.py
	$(BIN)/python benchmarks/bench_link.py
	$(BIN)/python benchmarks/bench_changepoint.py
	$(BIN)/python benchmarks/bench_stream.py
	$(BIN)/python benchmarks/bench_vit.py

## Train the transformer on data simulated on the fly (PRESET=cpu: ~25 min on 2 cores; gpu).
PRESET ?= cpu
train-vit: $(VENV)/.installed
	$(BIN)/livespt train vit --preset $(PRESET)
	$(BIN)/livespt train vit --preset $(PRESET) --variant features --minutes 12
	$(BIN)/livespt train vit --preset $(PRESET) --variant image --minutes 12

## Evaluate the shipped localizer on our simulator and deeptrack's frames, side by side
## (docs/localization_report.md, docs/img/localizer_report.png; about 35 min on 2 cores).
localizer-report: $(VENV)/.installed-validation
	$(BIN)/python benchmarks/bench_localizer.py

## Evaluate the shipped transformers against the CVE, MSD fit and Cramer-Rao bound (docs/vit/).
eval-vit: $(VENV)/.installed
	$(BIN)/livespt evaluate vit --out docs/vit

## Install Fiji.app (ImageJ2 + TrackMate) for the pyimagej backend, offline when a source is
## at hand (see scripts/install-fiji; LIVESPT_FIJI_DIR, FIJI_SOURCE).
fiji:
	scripts/install-fiji

## Regenerate the committed gRPC stubs from proto/ (tests fail if they drift).
proto: $(VENV)/.installed-dev
	$(BIN)/python -m livespt.server.protogen

clean:
	rm -rf $(VENV) $(THIRDPARTY_VENV) $(OUT) .pytest_cache .mypy_cache .ruff_cache *.egg-info
