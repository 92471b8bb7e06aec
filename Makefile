# `make test` builds .venv with the CPU torch that lies on this machine's disk (an unpinned torch would
# pull a multi-GB CUDA build), installs the project with its dev extra, and runs the tests.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo demo-quick check-wrapper clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	echo "torch==$(TORCH_VERSION)" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install --quiet -c $(VENV)/torch-constraint.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -rs tests

# The built-in default: synthetic clips, local tokenizer and models, DeepSpeed ZeRO-2 training through
# train_italian_video.sh, evaluation against a video-blind control (results in demo_run/).
demo: $(STAMP)
	$(PY) -m llava.demo.run

demo-quick: $(STAMP)
	$(PY) -m llava.demo.run --quick

check-wrapper: $(STAMP)
	$(PY) scripts_italian/test_gpt2_wrapper.py

clean:
	rm -rf $(VENV) .pytest_cache
