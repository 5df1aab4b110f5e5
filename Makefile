# The two set-up-and-run commands of the README. Each creates .venv and installs what it needs on first use.
#   make demo   the main job on the embedded default data
#   make test   the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench clean-venv

$(VENV)/.runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.testing: $(VENV)/.runtime requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

# Real product photos for the default experiment and its tests (Debian package; `make demo` installs it
# itself through launch.main when it can).
FASHION_MNIST := /usr/share/datasets/fashion-mnist
$(FASHION_MNIST):
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

demo: $(VENV)/.runtime
	$(PY) -m launch.main

test: $(VENV)/.testing | $(FASHION_MNIST)
	$(PY) -m pytest -q tests

bench: $(VENV)/.testing
	$(PY) -m benchmarks.evaluator_benchmark
	$(PY) -m benchmarks.backbone_benchmark
	$(PY) -m benchmarks.extraction_benchmark
	$(PY) -m benchmarks.train_benchmark

clean-venv:
	rm -rf $(VENV)
