# `make test` builds .venv with the CPU torch that lies on this machine's disk (an unpinned torch would
# pull a multi-GB CUDA build), installs the project with its dev extra, and runs the tests.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# lmms-eval's own environment (make lmms-env): a second venv that sees ours through a .pth file.
LMMS_VENV ?= .venv-lmms
LMMS_EVAL_VERSION ?= 0.7.3
LMMS_PY := $(LMMS_VENV)/bin/python
LMMS_STAMP := $(LMMS_VENV)/.installed
# The BabyLM 2025 pipeline's transformers (its requirements.txt pins 4.51.3), without this package: where
# the tests load exported folders as the pipeline would (make babylm-env).
BABYLM_VENV ?= .venv-babylm
BABYLM_STAMP := $(BABYLM_VENV)/.installed

.PHONY: venv lmms-env babylm-env test test-fast lint demo demo-quick check-wrapper clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	echo "torch==$(TORCH_VERSION)" > $(VENV)/torch-constraint.txt
	$(PY) -m pip install --quiet -c $(VENV)/torch-constraint.txt -e '.[dev]'
	touch $(STAMP)

# lmms-eval 0.7.3 pins av<16 (ours: 18) and wandb, and pulls torchvision (a CUDA build from PyPI), so it
# cannot join our venv. Its venv has no packages of its own for torch, transformers, av, decord or llava:
# a .pth file adds our venv's site-packages to its path, and everything it installs is constrained to the
# versions ours holds (pip freeze), so nothing of ours is replaced; our pip installs into it (--python),
# so it carries no pip or setuptools of its own either. Run it as
# `$(LMMS_PY) -m lmms_eval ...` (see llava/eval/lmms_task.py).
lmms-env: $(LMMS_STAMP)

$(LMMS_STAMP): $(STAMP) requirements-lmms-eval.txt Makefile
	rm -rf $(LMMS_VENV)
	$(PYTHON) -m venv --without-pip $(LMMS_VENV)
	$(PY) -c 'import sysconfig; print("import site; site.addsitedir(%r)" % sysconfig.get_paths()["purelib"])' \
		> "$$($(LMMS_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_llava_venv.pth"
	$(PY) -m pip freeze --exclude-editable | grep -v '^filelock==' > $(LMMS_VENV)/constraints.txt
	$(PY) -m pip --python $(LMMS_PY) install --quiet -c $(LMMS_VENV)/constraints.txt -r requirements-lmms-eval.txt
	$(PY) -m pip --python $(LMMS_PY) install --quiet --no-deps lmms-eval==$(LMMS_EVAL_VERSION)
	touch $(LMMS_STAMP)

# Its own packages (another transformers than ours), torch from the same local CPU build; no llava.
babylm-env: $(BABYLM_STAMP)

$(BABYLM_STAMP): requirements-babylm-pipeline.txt Makefile
	rm -rf $(BABYLM_VENV)
	$(PYTHON) -m venv $(BABYLM_VENV)
	$(BABYLM_VENV)/bin/python -m pip install --quiet torch==$(TORCH_VERSION) -r requirements-babylm-pipeline.txt
	touch $(BABYLM_STAMP)

# Every test, spread over TEST_WORKERS processes (pytest-xdist; a module's tests stay together, so its
# fixtures are built once). The multi-process tests (two ranks, a SLURM cluster) are in the mix: much of
# their time is spent waiting (rendezvous, scheduling, signals, time limits), and measured on 2 cores
# with two workers they took 8 min against 14 one at a time; their modules start first (conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP) $(LMMS_STAMP) $(BABYLM_STAMP)
	$(PY) -m pytest -q -rs --durations=25 -n $(TEST_WORKERS) --dist loadfile tests

# The inner loop: everything but the slow, distributed and SLURM tiers (markers in pyproject.toml), in
# under a minute on 2 CPU cores. `make test` (and CI) still run all of them.
test-fast: $(STAMP)
	$(PY) -m pytest -q -rs -m "not slow and not distributed and not slurm" tests

# Ruff's checks and its formatter, configured in pyproject.toml; reports only, changes nothing. Both run
# (the formatter's report is not hidden behind a failed check); either failing fails the target.
lint: $(STAMP)
	$(PY) -m ruff check .; checked=$$?; $(PY) -m ruff format --check . && exit $$checked

# The built-in default: synthetic clips, local tokenizer and models, DeepSpeed ZeRO-2 training through
# train_italian_video.sh, evaluation against a video-blind control (results in demo_run/).
demo: $(STAMP)
	$(PY) -m llava.demo.run

demo-quick: $(STAMP)
	$(PY) -m llava.demo.run --quick

check-wrapper: $(STAMP)
	$(PY) scripts_italian/test_gpt2_wrapper.py

clean:
	rm -rf $(VENV) $(LMMS_VENV) $(BABYLM_VENV) .pytest_cache
