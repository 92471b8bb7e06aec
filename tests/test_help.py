"""`--help` of every entry point, run as users run it: exit status 0, the usage (or the script's own help)
on stdout, nothing on stderr, and no work done. The commands import torch (seconds each), so the ones
this session selected run side by side, once, in a module fixture; each entry point stays its own test.

The inference commands and the benchmark run their `cli` in this process instead (IN_PROCESS): --help
ends in argument parsing, before any import of their own, and what their `python -m` start prints
(the __main__ wiring, the module imports, nothing else on stderr) is checked by a failure of each
through a real subprocess, with the exact stderr, in test_errors_inference.py and test_errors_tools.py."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from llava import bench, errors
from llava.eval import captions, export_lm, run_llava
from llava.serve import cli as serve

from entry_points import run_cli_with_process_output
from train_helpers import ROOT

pytestmark = pytest.mark.slow

PYTHON = [sys.executable]

# name -> (command line before --help, text its help must show)
ENTRY_POINTS = {
    "train": (PYTHON + ["-m", "llava.train.train"], "--config RECIPE.yaml"),
    "recipe": (PYTHON + ["-m", "llava.train.recipe"], "--config RECIPE"),
    # LLaVA's users run train_mem.py as a script path, not as a module
    "train_mem.py": (PYTHON + ["llava/train/train_mem.py"], "--model_name_or_path"),
    "cache_features": (PYTHON + ["-m", "llava.train.cache_features"], "--feature_cache"),
    "serve.cli": (PYTHON + ["-m", "llava.serve.cli"], "--model-path"),
    "serve.web": (PYTHON + ["-m", "llava.serve.web"], "--max-upload-mb"),
    "eval.captions": (PYTHON + ["-m", "llava.eval.captions"], "--model-path"),
    "eval.export_lm": (PYTHON + ["-m", "llava.eval.export_lm"], "--model-path"),
    "model.merge_lora": (PYTHON + ["-m", "llava.model.merge_lora"], "--save-model-path"),
    # LLaVA's script path of the same command
    "merge_lora_weights.py": (PYTHON + ["scripts/merge_lora_weights.py"], "--model-base"),
    "eval.run_llava": (PYTHON + ["-m", "llava.eval.run_llava"], "--image-file"),
    "eval.lmms_task": (PYTHON + ["-m", "llava.eval.lmms_task"], "--video-folder"),
    "eval.babylm zero_shot": (PYTHON + ["-m", "llava.eval.babylm", "zero_shot"], "--model_path_or_name"),
    "eval.babylm export": (PYTHON + ["-m", "llava.eval.babylm", "export"], "RUN_DIR"),
    "eval.grounding predict": (PYTHON + ["-m", "llava.eval.grounding", "predict"], "--max-new-tokens"),
    "eval.grounding score": (PYTHON + ["-m", "llava.eval.grounding", "score"], "--task"),
    "bench": (PYTHON + ["-m", "llava.bench"], "--configs"),
    "bench.versions": (PYTHON + ["-m", "llava.bench.versions"], "--before"),
    "demo": (PYTHON + ["-m", "llava.demo.run"], "--workdir"),
    "prepare_webvid_italian.py": (PYTHON + ["scripts_italian/prepare_webvid_italian.py"], "--annotations"),
    "test_gpt2_wrapper.py": (PYTHON + ["scripts_italian/test_gpt2_wrapper.py"], "checks: imports"),
    "check_cuda.py": (PYTHON + ["scripts/check_cuda.py"], "eager and SDPA attention"),
    "train_italian_video.sh": (["bash", "train_italian_video.sh"], "bash train_italian_video.sh"),
    "gpu_check.sh": (["bash", "scripts/gpu_check.sh"], "bash scripts/gpu_check.sh"),
}
SHELL_SCRIPTS = {"train_italian_video.sh", "gpu_check.sh"}
# name -> the function `python -m` runs (those that take seconds to start; lmms_task and the demo take less)
IN_PROCESS = {
    "serve.cli": serve.cli,
    "eval.captions": captions.cli,
    "eval.export_lm": export_lm.cli,
    "eval.run_llava": run_llava.cli,
    "bench": errors.entry_point(bench.main),
}


def _help(name: str) -> subprocess.CompletedProcess:
    command, _ = ENTRY_POINTS[name]
    env = {k: v for k, v in os.environ.items() if k != "LLAVA_DEBUG"}
    return subprocess.run(command + ["--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _help_in_process(name: str):
    with pytest.MonkeyPatch.context() as environment:
        environment.delenv("LLAVA_DEBUG", raising=False)
        return run_cli_with_process_output(IN_PROCESS[name], ["--help"])


@pytest.fixture(scope="module")
def helps(request) -> dict:
    """The --help runs of the entry points this session selected: the subprocesses side by side, then
    the in-process ones (each result has returncode, stdout and stderr)."""
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.module.__name__ == __name__ and hasattr(item, "callspec")
    ]
    started = [name for name in selected if name not in IN_PROCESS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(started, pool.map(_help, started)))
    return results | {name: _help_in_process(name) for name in selected if name in IN_PROCESS}


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_help(helps, name):
    result = helps[name]
    _, shown = ENTRY_POINTS[name]
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    if name not in SHELL_SCRIPTS:
        assert result.stdout.startswith("usage: "), result.stdout[:500]
    assert shown in result.stdout, result.stdout[-3000:]
    # the help only: no check ran (the wrapper check used to run all its checks on --help)
    assert not [line for line in result.stdout.splitlines() if line.startswith(("PASS  ", "FAIL  "))]
