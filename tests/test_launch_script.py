"""train_italian_video.sh: early errors, the command it builds (the recipe, then the flags given after the
script's name), the retired setting variables that stop it, and real training through it, with plain bash
(torchrun --standalone, DeepSpeed ZeRO-2, two CPU processes) and under a real SLURM (a private one-node
cluster on loopback, started and stopped by the test: see tests/slurm_cluster.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster
from train_helpers import flag_tokens

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "train_italian_video.sh"

# The tiny DINOv2 of llava.testing has an 8x8 patch grid: these settings fit it and a 256-position GPT-2.
TINY_FLAGS = {
    "num_frames": 8,
    "mm_fast_grid": (8, 2, 4),
    "mm_slow_grid": (2, 4, 4),
    "mm_packer_num_heads": 4,
    "mm_projector_hidden_size": 64,
    "model_max_length": 256,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "max_steps": 4,
    "save_steps": 4,
    "logging_steps": 1,
    "learning_rate": "1e-3",
    "mm_projector_lr": "1e-3",
    "warmup_ratio": "0.0",
    "dataloader_num_workers": 0,
    "seed": 0,
}

# The variables that set training options before the script took flags, each of which now stops it, and
# the flag each was passed as (the script's "Settings" list then; the data variables were MODE's, and
# DATA_DIR, not here, was a data file and a clip folder inside it). Written out here, not read from the
# script, so that a variable dropped from its table (silently ignored again) fails the tests.
RETIRED = {
    "LM_PATH": "--model_name_or_path",
    "VISION_TOWER": "--vision_tower",
    "DATA_PATH": "--data_path",
    "VIDEO_FOLDER": "--video_folder",
    "IMAGE_FOLDER": "--image_folder",
    "OUTPUT_DIR": "--output_dir",
    "DS_CONFIG": "--deepspeed",
    "VERSION": "--version",
    "NUM_FRAMES": "--num_frames",
    "FAST_GRID": "--mm_fast_grid",
    "SLOW_GRID": "--mm_slow_grid",
    "MM_PACKER_NUM_HEADS": "--mm_packer_num_heads",
    "MM_VISION_SELECT_LAYER": "--mm_vision_select_layer",
    "MM_PROJECTOR_TYPE": "--mm_projector_type",
    "PROJECTOR_HIDDEN": "--mm_projector_hidden_size",
    "MM_RESAMPLER_TYPE": "--mm_resampler_type",
    "MM_TUNABLE_PARTS": "--mm_tunable_parts",
    "PRETRAIN_MM_MLP_ADAPTER": "--pretrain_mm_mlp_adapter",
    "NUM_EPOCHS": "--num_train_epochs",
    "MAX_STEPS": "--max_steps",
    "BATCH_SIZE": "--per_device_train_batch_size",
    "GRAD_ACCUM": "--gradient_accumulation_steps",
    "LEARNING_RATE": "--learning_rate",
    "MM_PROJECTOR_LR": "--mm_projector_lr",
    "WEIGHT_DECAY": "--weight_decay",
    "WARMUP_RATIO": "--warmup_ratio",
    "WARMUP_STEPS": "--warmup_steps",
    "LR_SCHEDULER": "--lr_scheduler_type",
    "MODEL_MAX_LENGTH": "--model_max_length",
    "MAX_SKIP_FRACTION": "--max_skip_fraction",
    "BF16": "--bf16",
    "FP16": "--fp16",
    "GRADIENT_CHECKPOINTING": "--activation_checkpointing",
    "LOGGING_STEPS": "--logging_steps",
    "SAVE_STRATEGY": "--save_strategy",
    "SAVE_STEPS": "--save_steps",
    "SAVE_TOTAL_LIMIT": "--save_total_limit",
    "SAVE_EVERY_MINUTES": "--save_every_minutes",
    "DATALOADER_NUM_WORKERS": "--dataloader_num_workers",
    "REPORT_TO": "--report_to",
    "SEED": "--seed",
    "EVAL_MILESTONES": "--eval_milestones",
    "FEATURE_CACHE": "--feature_cache",
    "VIDEO_DATA_PATH": "--data_path",
    "TEXT_DATA_PATH": "--data_path",
}
RETIRED_VARIABLES = [*RETIRED, "DATA_DIR"]
# The variables that choose how the script launches (each listed in its help), which a test sets where it
# means to.
LAUNCHING = (
    "MODE",
    "RECIPE",
    "GPUS_PER_NODE",
    "NPROC",
    "LAUNCHER",
    "MASTER_ADDR",
    "MASTER_PORT",
    "REQUEUE",
    "MAX_REQUEUES",
    "STOP_TIMEOUT",
    "PREFLIGHT",
    "PYTHON",
    "TRAIN_MODULE",
    "LLAVA_HOME",
)


def clean_env(**overrides) -> dict:
    """The environment of a launch: this interpreter, no inherited SLURM allocation or torch.distributed
    variables, none of the script's variables from the shell that runs the tests (a retired one would stop
    every launch), nothing downloaded."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "PMI_", "OMPI_"))
        and k
        not in (
            "RANK",
            "LOCAL_RANK",
            "WORLD_SIZE",
            "LOCAL_WORLD_SIZE",
            "GROUP_RANK",
            "ROLE_RANK",
            "TORCHELASTIC_RUN_ID",
            "OMP_NUM_THREADS",
        )
        and k not in LAUNCHING
        and k not in RETIRED_VARIABLES
    }
    env.update(PYTHON=sys.executable, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def job_env(cluster: SlurmCluster, env: dict) -> dict:
    """What sbatch is given (and passes on to the job): a clean_env with the test cluster's configuration and
    tools; not the cluster's copy of this process's environment, which would bring back what clean_env
    leaves out."""
    return {**env, "SLURM_CONF": cluster.env["SLURM_CONF"], "PATH": cluster.env["PATH"]}


def run_script(env: dict, *args: str, timeout: float = 60, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`bash train_italian_video.sh ARGS` in its own process group, which is killed whole (torchrun and its
    ranks) if it runs past `timeout`."""
    command = ["bash", str(SCRIPT), *args]
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                stdout, stderr = proc.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        pytest.fail(f"{' '.join(command)} did not finish within {timeout} s")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def fake_python(folder: Path, checks: bool = False) -> tuple[Path, Path]:
    """An executable that stands in for python where the script starts the training: records its
    arguments, one per line, and exits 0. What the script asks this interpreter about the recipe (and,
    with `checks`, the preflight) goes to the real one."""
    record = folder / "argv.txt"
    exe = folder / "fake-python"
    real = "llava.train.recipe|llava.train.preflight" if checks else "llava.train.recipe"
    exe.write_text(
        f'#!/usr/bin/env bash\nif [[ "$1" == -m && "$2" =~ ^({real})$ ]]; then exec "{sys.executable}" "$@"; fi\n'
        f'printf "%s\\n" "$@" > "{record}"\n'
    )
    exe.chmod(0o755)
    return exe, record


def launched_arguments(record: Path) -> list[str]:
    """The training's arguments in the command a stand-in python recorded (after torchrun's `-m MODULE`)."""
    argv = record.read_text().splitlines()
    return argv[argv.index("llava.train.train") + 1 :]


# dummy_paths and script_assets (the script's path flags, never trained on / for tiny real runs, as
# train_helpers.ScriptPaths) are session fixtures of conftest.py.


def assert_final_model_loads(output_dir: Path, tower_dir: str | None = None):
    """The final model loads through AutoModelForCausalLM alone; with a tower, the frozen tower's weights
    are the ones it started from (not empty ZeRO-3 partitions, not re-initialized)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    import llava.model  # noqa: F401  (registers the llava families)

    config = AutoConfig.from_pretrained(output_dir)
    assert bool(getattr(config, "mm_vision_tower", None)) == (tower_dir is not None), config
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if tower_dir is not None:
        trained = model.get_vision_tower().vision_tower.state_dict()
        original = AutoModel.from_pretrained(tower_dir).state_dict()
        assert trained.keys() == original.keys()
        for name, value in original.items():
            assert torch.equal(trained[name], value), f"frozen tower weight {name} changed"
    return model


def train_log_losses(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"'loss': '?([0-9.]+(?:e-?[0-9]+)?)", text)]


# ----------------------------------------------------------------------- (a) early errors, no training
# What the preflight (run by the script before it launches) says of each wrong path, and the script's own
# checks of its launching variables. A case: (launching variables, flags laid over the dummy paths, what the
# first line says); "{empty_dir}" stands for an empty folder.
MISSING_CASES = {
    "lm folder": (
        {},
        {"model_name_or_path": "/nonexistent/bambi-gpt2"},
        "error: --model_name_or_path folder does not exist (/nonexistent/bambi-gpt2)",
    ),
    "lm without config.json": (
        {},
        {"model_name_or_path": "{empty_dir}"},
        "error: --model_name_or_path folder has no config.json, so it is not a model folder ({empty_dir})",
    ),
    "data file": ({}, {"data_path": "/nonexistent/train.json"}, "(/nonexistent/train.json)"),
    "video folder": (
        {},
        {"video_folder": "/nonexistent/videos"},
        "error: --video_folder folder does not exist (/nonexistent/videos)",
    ),
    "deepspeed config": (
        {},
        {"deepspeed": "scripts/zero9.json"},
        "error: --deepspeed config file does not exist (scripts/zero9.json)",
    ),
    "tower path": (
        {},
        {"vision_tower": "./no/such/tower"},
        "error: --vision_tower folder does not exist (./no/such/tower)",
    ),
    "tower not a hub id": (
        {},
        {"vision_tower": "dinov2 large"},
        "error: --vision_tower folder does not exist (dinov2 large)",
    ),
    "hub tower offline, not cached": (
        {"HF_HOME": "{empty_dir}"},
        {"vision_tower": "facebook/dinov2-large"},
        "error: --vision_tower folder does not exist (facebook/dinov2-large), and no hub model of that name is in the "
        "Hugging Face cache ({empty_dir}/hub) or can be downloaded (HF_HUB_OFFLINE is set)",
    ),
    "mode": (
        {"MODE": "audio"},
        {},
        "train_italian_video.sh: error: MODE must be 'video' (video+text training) or 'text' (text-only training on the captions), not 'audio'",
    ),
    "recipe": (
        {"RECIPE": "recipes/none.yaml"},
        {},
        "train_italian_video.sh: error: RECIPE: recipe file 'recipes/none.yaml' not found",
    ),
    "text mode data file": (
        {"MODE": "text"},
        {"data_path": "/nonexistent/captions.json"},
        "(/nonexistent/captions.json)",
    ),
}


@pytest.mark.slow
def test_every_wrong_path_is_named_in_the_one_line(dummy_paths, tmp_path):
    exe, record = fake_python(tmp_path, checks=True)
    wrong = {
        "model_name_or_path": tmp_path / "no-lm",
        "video_folder": tmp_path / "no-videos",
        "vision_tower": tmp_path / "no-tower",
    }
    result = run_script(clean_env(PYTHON=exe), *flag_tokens(dummy_paths.video, wrong, output_dir=tmp_path / "out"))
    assert (result.returncode, result.stderr) == (
        1,
        (
            f"error: --model_name_or_path folder does not exist ({tmp_path / 'no-lm'}); --vision_tower folder does not "
            f"exist ({tmp_path / 'no-tower'}); --video_folder folder does not exist ({tmp_path / 'no-videos'})\n"
        ),
    )
    assert not record.exists()


@pytest.mark.slow
def test_packer_grids_that_do_not_tile_the_tower_are_refused_before_any_model_loads(script_assets, tmp_path):
    exe, record = fake_python(tmp_path, checks=True)
    arguments = flag_tokens(script_assets.video, output_dir=tmp_path / "out", mm_fast_grid=(8, 3, 4), deepspeed="none")
    result = run_script(clean_env(PYTHON=exe), *arguments)
    # the tiny tower: 56-pixel crops in 7-pixel patches, an 8x8 grid
    assert (result.returncode, result.stderr) == (
        2,
        (
            "error: --mm_fast_grid 8x3x4 does not divide the input grid 8x8x8 (frames x rows x columns). Valid choices: "
            f"frames in (1, 2, 4, 8); rows in (1, 2, 4, 8); columns in (1, 2, 4, 8). ({script_assets.video['vision_tower']})\n"
        ),
    )
    assert not record.exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(MISSING_CASES))
def test_missing_path_fails_early_with_a_clear_message(case, dummy_paths, tmp_path):
    variables, flags, expected = MISSING_CASES[case]
    exe, record = fake_python(tmp_path, checks=True)
    empty = tmp_path / "empty"
    empty.mkdir()

    def filled(values: dict) -> dict:
        return {k: v.replace("{empty_dir}", str(empty)) for k, v in values.items()}

    paths = dummy_paths.text if variables.get("MODE") == "text" else dummy_paths.video
    env = clean_env(PYTHON=exe, NPROC=2, **filled(variables))
    result = run_script(env, *flag_tokens(paths, filled(flags), output_dir=tmp_path / "out", max_steps=1))
    assert result.returncode in (1, 2), result.stderr
    assert expected.replace("{empty_dir}", str(empty)) in result.stderr.splitlines()[0], result.stderr
    assert not record.exists(), "training was launched despite the error"


@pytest.mark.slow
def test_the_dummy_paths_pass_the_checks(dummy_paths, tmp_path):
    """The cases above fail for their own path alone: with none of them, the script launches."""
    exe, record = fake_python(tmp_path, checks=True)
    result = run_script(clean_env(PYTHON=exe, NPROC=2), *flag_tokens(dummy_paths.video, output_dir=tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines()[:2] == ["-m", "llava.train.launch"]


@pytest.mark.slow
def test_text_mode_is_the_text_recipe_which_needs_no_tower_or_videos(dummy_paths, tmp_path):
    """MODE=text runs recipes/italian_text.yaml, which removes the headline recipe's tower and clip folder
    (neither is on this machine: the preflight would name them); a flag given wins over it."""
    exe, record = fake_python(tmp_path, checks=True)
    env = clean_env(PYTHON=exe, NPROC=1, MODE="text")
    arguments = flag_tokens(dummy_paths.text, output_dir=tmp_path / "out")
    result = run_script(env, *arguments)
    assert result.returncode == 0, result.stderr
    assert launched_arguments(record) == ["--config", "recipes/italian_text.yaml", *arguments]

    record.unlink()
    tower = tmp_path / "missing-tower"
    with_tower = run_script(env, *arguments, "--vision_tower", str(tower))
    assert (with_tower.returncode, with_tower.stderr) == (1, f"error: --vision_tower folder does not exist ({tower})\n")
    assert not record.exists()


# ------------------------------------------------------------------------ the command the script builds
def test_standalone_command_is_the_recipe_then_the_script_s_arguments(dummy_paths, tmp_path):
    exe, record = fake_python(tmp_path)
    flags = {"mm_fast_grid": (4, 2, 2), "per_device_train_batch_size": 3, "deepspeed": "none", "max_steps": 3}
    arguments = flag_tokens(dummy_paths.video, flags, output_dir=tmp_path / "out", learning_rate=0.5)
    result = run_script(clean_env(PYTHON=exe, NPROC=2), *arguments, timeout=30)
    assert result.returncode == 0, result.stderr
    argv = record.read_text().splitlines()
    head = argv[: argv.index("-m", 3) + 2]
    assert head == [
        "-m",
        "llava.train.launch",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "-m",
        "llava.train.train",
    ]
    # the recipe, then the script's own arguments as they were given (--deepspeed none then drops the
    # recipe's: test_recipe.py)
    assert argv[len(head) :] == ["--config", "recipes/italian_video.yaml", *arguments]
    assert re.search(r"^  RECIPE +recipes/italian_video\.yaml$", result.stdout, re.M), result.stdout
    assert f"\n  ARGUMENTS              {' '.join(arguments)}\n" in result.stdout
    assert f"OUTPUT_DIR             {tmp_path / 'out'}" in result.stdout


def test_the_output_folder_comes_from_the_recipe_where_no_flag_sets_it(dummy_paths, tmp_path):
    exe, record = fake_python(tmp_path)
    recipe = tmp_path / "run.yaml"
    recipe.write_text(f"base: {REPO / 'recipes' / 'italian_video.yaml'}\noutput_dir: {tmp_path / 'from-recipe'}\n")
    result = run_script(clean_env(PYTHON=exe, RECIPE=recipe), *flag_tokens(dummy_paths.video), timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"OUTPUT_DIR             {tmp_path / 'from-recipe'}" in result.stdout
    assert (tmp_path / "from-recipe").is_dir()


@pytest.mark.parametrize("spelling", ["--config RECIPE", "--config=RECIPE"])
def test_a_config_among_the_arguments_replaces_the_recipe(spelling, dummy_paths, tmp_path):
    """The command holds that --config alone, and RECIPE (or MODE's recipe) need not exist then."""
    exe, record = fake_python(tmp_path)
    recipe = tmp_path / "other.yaml"
    recipe.write_text(f"base: {REPO / 'recipes' / 'italian_text.yaml'}\noutput_dir: {tmp_path / 'other-run'}\n")
    config = spelling.replace("RECIPE", str(recipe)).split(" ")
    arguments = [*config, *flag_tokens(dummy_paths.text)]
    env = clean_env(PYTHON=exe, RECIPE=tmp_path / "no-such-recipe.yaml")
    result = run_script(env, *arguments, timeout=30)
    assert result.returncode == 0, result.stderr
    assert launched_arguments(record) == arguments
    assert re.search(r"^  RECIPE +\(the --config given\)$", result.stdout, re.M), result.stdout
    assert f"OUTPUT_DIR             {tmp_path / 'other-run'}" in result.stdout  # read from that recipe

    without = run_script(env, *flag_tokens(dummy_paths.text), timeout=30)  # then RECIPE is the recipe
    assert without.returncode == 2, without.stderr
    assert f"RECIPE: recipe file '{tmp_path / 'no-such-recipe.yaml'}' not found" in without.stderr


def test_a_feature_cache_named_by_the_settings_is_filled_before_training(dummy_paths, tmp_path):
    """The recipe's feature_cache, or --feature_cache (which `none` removes)."""
    exe, record = fake_python(tmp_path)
    exe.write_text(exe.read_text().replace('> "', '>> "'))  # every call, in order, not only the last
    recipe = tmp_path / "cached.yaml"
    recipe.write_text(f"base: {REPO / 'recipes' / 'italian_video.yaml'}\nfeature_cache: {tmp_path / 'features'}\n")
    arguments = flag_tokens(dummy_paths.video, output_dir=tmp_path / "out")
    result = run_script(clean_env(PYTHON=exe, RECIPE=recipe), *arguments, timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"=== caching tower features in {tmp_path / 'features'} ===" in result.stdout
    modules = [line for line in record.read_text().splitlines() if line.startswith("llava.")]
    assert modules == ["llava.train.preflight", "llava.train.cache_features", "llava.train.launch", "llava.train.train"]

    record.unlink()
    removed = run_script(clean_env(PYTHON=exe, RECIPE=recipe), *arguments, "--feature_cache", "none", timeout=30)
    assert removed.returncode == 0, removed.stderr
    modules = [line for line in record.read_text().splitlines() if line.startswith("llava.")]
    assert modules == ["llava.train.preflight", "llava.train.launch", "llava.train.train"]

    record.unlink()  # the headline recipe names none: the flag does
    flagged = run_script(clean_env(PYTHON=exe), *arguments, "--feature_cache", str(tmp_path / "flagged"), timeout=30)
    assert flagged.returncode == 0, flagged.stderr
    assert f"=== caching tower features in {tmp_path / 'flagged'} ===" in flagged.stdout
    modules = [line for line in record.read_text().splitlines() if line.startswith("llava.")]
    assert modules == ["llava.train.preflight", "llava.train.cache_features", "llava.train.launch", "llava.train.train"]


# -------------------------------------------------------------------- the retired setting variables
def retired_line(variable: str, flags: str) -> str:
    return (
        f"train_italian_video.sh: error: {variable} is no longer read: pass {flags} after the script's name "
        f"instead (or set it in the recipe), and unset {variable}"
    )


NOTHING_STARTED = (
    f"train_italian_video.sh: nothing started (relative paths are taken from {REPO}); "
    "see 'bash train_italian_video.sh --help'"
)


@pytest.mark.parametrize("variable", RETIRED_VARIABLES)
def test_a_retired_variable_stops_the_script_naming_its_flag_and_value(variable, tmp_path):
    """Each in the mode that read it (TEXT_DATA_PATH: MODE=text), with a value the flag takes as it is (a
    grid's "8x2x4" was allowed: the flag takes its sizes apart)."""
    exe, record = fake_python(tmp_path)
    value = "8x2x4" if variable.endswith("_GRID") else "some/value"
    shown = "8 2 4" if variable.endswith("_GRID") else value
    if variable == "DATA_DIR":
        flags = f"--data_path {value}/train_video.json --video_folder {value}/videos"
    else:
        flags = f"{RETIRED[variable]} {shown}"
    mode = "text" if variable == "TEXT_DATA_PATH" else "video"
    result = run_script(clean_env(PYTHON=exe, MODE=mode, **{variable: value}), "--output_dir", str(tmp_path / "out"))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [retired_line(variable, flags), NOTHING_STARTED]
    assert not record.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "mode, variable, flags",
    [
        ("text", "DATA_DIR", "--data_path /d/train_text.json"),
        ("text", "VISION_TOWER", "--vision_tower /d (for a video run)"),
        ("text", "VIDEO_DATA_PATH", "--data_path /d (for a video run)"),
        ("video", "TEXT_DATA_PATH", "--data_path /d (for a text run, MODE=text)"),
    ],
)
def test_a_retired_variable_that_mode_did_not_read_names_the_flag_of_the_run_that_did(mode, variable, flags, tmp_path):
    """A text run read DATA_DIR's text file alone and ignored the visual modules' variables; a video run
    ignored TEXT_DATA_PATH: following the line never adds a tower to a text run, or captions to a video run."""
    exe, record = fake_python(tmp_path)
    result = run_script(clean_env(PYTHON=exe, MODE=mode, **{variable: "/d"}))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [retired_line(variable, flags), NOTHING_STARTED]
    assert not record.exists()


def test_every_retired_variable_set_is_named_at_once_with_the_launching_errors(tmp_path):
    """A shell that still holds a video run's variables, running a text run: every one is named (in the
    order of their names), with the launching variables' own errors, in one go."""
    exe, record = fake_python(tmp_path)
    leftovers = {"VISION_TOWER": "towers/dinov2", "VIDEO_FOLDER": "videos", "FAST_GRID": "8,2,4", "SEED": "7"}
    result = run_script(clean_env(PYTHON=exe, MODE="text", NPROC=0, **leftovers), *flag_tokens(output_dir=tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        retired_line("FAST_GRID", "--mm_fast_grid 8 2 4 (for a video run)"),
        retired_line("SEED", "--seed 7"),
        retired_line("VIDEO_FOLDER", "--video_folder videos (for a video run)"),
        retired_line("VISION_TOWER", "--vision_tower towers/dinov2 (for a video run)"),
        "train_italian_video.sh: error: GPUS_PER_NODE/NPROC: '0' is not a positive number of processes",
        NOTHING_STARTED,
    ]
    assert not record.exists()


def test_an_empty_retired_variable_is_not_an_error(tmp_path):
    """`export LM_PATH=` (or a scheduler's empty default) says nothing: the script launches."""
    exe, record = fake_python(tmp_path)
    env = clean_env(PYTHON=exe, **dict.fromkeys(RETIRED_VARIABLES, ""))
    result = run_script(env, *flag_tokens(output_dir=tmp_path / "out"), timeout=30)
    assert (result.returncode, result.stderr) == (0, "")
    assert launched_arguments(record) == [
        "--config",
        "recipes/italian_video.yaml",
        "--output_dir",
        str(tmp_path / "out"),
    ]


@pytest.mark.parametrize(
    "variable, value, flag, given",
    [
        ("OUTPUT_DIR", "my run & co", "--output_dir", ["{tmp}/my run & co"]),
        ("FAST_GRID", "4x2x2", "--mm_fast_grid", ["4", "2", "2"]),
    ],
)
def test_the_flags_a_retired_variable_names_pasted_after_the_script_s_name_do_what_it_did(
    variable, value, flag, given, tmp_path
):
    """The line's flags are shell words: pasted into bash as they are, a value with spaces and a `&` arrives
    whole, and a grid as its sizes."""
    exe, record = fake_python(tmp_path)
    value = f"{tmp_path}/{value}" if variable == "OUTPUT_DIR" else value
    stopped = run_script(clean_env(PYTHON=exe, **{variable: value}))
    pasted = re.fullmatch(r".* pass (.*) after the script's name instead .*", stopped.stderr.splitlines()[0]).group(1)
    output = "" if variable == "OUTPUT_DIR" else f"--output_dir {shlex.quote(str(tmp_path / 'out'))}"
    line = f"bash {shlex.quote(str(SCRIPT))} {pasted} {output}"
    env = clean_env(PYTHON=exe)
    result = subprocess.run(["bash", "-c", line], env=env, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (line, result.stderr)
    argv = launched_arguments(record)
    at = argv.index(flag) + 1
    assert argv[at : at + len(given)] == [g.replace("{tmp}", str(tmp_path)) for g in given], (line, argv)


def test_every_flag_the_retired_table_names_is_a_training_flag():
    """The script's table (and its assignments that depend on MODE) can name no flag that does not exist,
    and holds the variables that the tests above check."""
    from llava.train.arguments import FIELDS
    from llava.train.command_line import setting_name

    text = SCRIPT.read_text()
    table = re.search(r"^declare -A RETIRED=\((.*?)^\)$", text, re.M | re.S).group(1)
    entries = re.findall(r'\[(\w+)\]="([^"]*)"', table) + re.findall(r'RETIRED\[(\w+)\]\+?="([^"]*)"', text)
    assert {variable for variable, _ in entries} == set(RETIRED_VARIABLES)
    flags = {flag for _, replacement in entries for flag in re.findall(r"(?<!\S)--\w+", replacement)}
    assert {"--model_name_or_path", "--video_folder", "--activation_checkpointing"} <= flags  # the regex finds them
    assert sorted(flag for flag in flags if setting_name(flag) not in FIELDS) == []


def test_slurm_command_spans_the_allocation(dummy_paths, tmp_path):
    """Inside a (pretend) two-node allocation: one srun task per node, each a torchrun joining a c10d
    rendezvous on the first node."""
    exe, record = fake_python(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        '#!/usr/bin/env bash\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a01\\ngpu-a02\\n"\n'
    )
    (bin_dir / "srun").write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{tmp_path}/srun.txt"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = clean_env(
        PYTHON=exe,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_NNODES="2",
        SLURM_JOB_NODELIST="gpu-a[01-02]",
        SLURM_GPUS_ON_NODE="4",
        SLURM_CPUS_PER_TASK="32",
        SLURM_SUBMIT_DIR=str(REPO),
    )
    result = run_script(env, *flag_tokens(dummy_paths.video, output_dir=tmp_path / "out"), timeout=30)
    assert result.returncode == 0, result.stderr
    srun = (tmp_path / "srun.txt").read_text().splitlines()
    # each node's task starts torchrun through a one-line snippet that gives it the node's own address
    assert srun[:13] == [
        "--nodes",
        "2",
        "--ntasks",
        "2",
        "--ntasks-per-node",
        "1",
        "--kill-on-bad-exit=1",
        "--cpus-per-task",
        "32",
        "bash",
        "-c",
        srun[11],
        "on-node",
    ]
    assert srun[13] == str(exe)
    torchrun = srun[14:]
    assert torchrun[:14] == [
        "-m",
        "llava.train.launch",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "4",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        "gpu-a01:24242",
        "--rdzv_id",
        "4242",
        "-m",
        "llava.train.train",
    ]
    assert re.search(r"OMP_NUM_THREADS\s+8\n", result.stdout), result.stdout


# --------------------------------------------------------------- (b) plain bash: DeepSpeed ZeRO-2/3, 2 procs
@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_bash_trains_with_deepspeed_on_two_processes(stage, script_assets, tmp_path):
    output = tmp_path / "run"
    arguments = flag_tokens(TINY_FLAGS, script_assets.video, output_dir=output, deepspeed=f"scripts/{stage}.json")
    start = time.monotonic()
    result = run_script(clean_env(NPROC=2), *arguments, timeout=300)
    elapsed = time.monotonic() - start
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    print(f"bash + torchrun + DeepSpeed {stage}, 2 CPU processes, 4 steps: {elapsed:.1f} s")
    assert f"--deepspeed scripts/{stage}.json" in result.stdout
    checkpoint = output / "checkpoint-4"
    assert checkpoint.is_dir(), sorted(p.name for p in output.iterdir())
    assert list(checkpoint.glob("global_step*")), "no DeepSpeed engine state in the checkpoint: DeepSpeed did not run"
    assert len(train_log_losses(log)) >= 4, log[-3000:]
    assert_final_model_loads(output, script_assets.video["vision_tower"])


@pytest.mark.slow
def test_feature_cache_is_filled_then_read_by_training(script_assets, tmp_path):
    output, cache = tmp_path / "cached-run", tmp_path / "features"
    env = clean_env(NPROC=1)
    arguments = flag_tokens(TINY_FLAGS, script_assets.video, output_dir=output, deepspeed="none", feature_cache=cache)
    result = run_script(env, *arguments, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    samples = len(json.loads(Path(script_assets.video["data_path"]).read_text()))
    assert f"0 cached already, {samples} to compute" in log
    assert f"{samples} of {samples} samples with media are cached" in log
    assert (output / "checkpoint-4").is_dir() and len(train_log_losses(log)) >= 4
    # Started again (a resumed run): nothing left to compute.
    again = run_script(env, *arguments, timeout=300)
    assert again.returncode == 0 and f"{samples} cached already, 0 to compute" in again.stdout + again.stderr


# ------------------------------------------------------------------------ (d) MODE=text: the LM alone
@pytest.mark.slow
def test_text_mode_trains_the_language_model_on_captions(script_assets, tmp_path):
    output = tmp_path / "text-run"
    arguments = flag_tokens(TINY_FLAGS, script_assets.text, output_dir=output, deepspeed="none")
    start = time.monotonic()
    result = run_script(clean_env(MODE="text", NPROC=1), *arguments, timeout=300)
    elapsed = time.monotonic() - start
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    print(f"MODE=text, one process, no DeepSpeed, 4 steps: {elapsed:.1f} s")
    assert " --config recipes/italian_text.yaml " in result.stdout  # the command: the recipe without a tower
    assert (output / "checkpoint-4").is_dir()
    losses = train_log_losses(log)
    assert len(losses) >= 4, log[-3000:]
    model = assert_final_model_loads(output)
    assert model.get_vision_tower() is None


# ------------------------------------------------------------------------------ (c) sbatch, real SLURM
def sbatch(cluster: SlurmCluster, env: dict, log_dir: Path, *script_args: str, timeout: float = 300, cwd: Path = REPO):
    """`sbatch --wait train_italian_video.sh` from the repository, as a user would; the #SBATCH GPU and CPU
    requests are overridden to what this machine has. Returns (returncode, job log, job info)."""
    log_dir.mkdir(parents=True, exist_ok=True)  # SLURM opens --output before the job runs
    cpus = os.cpu_count() or 1
    args = [
        "sbatch",
        "--wait",
        "--parsable",
        f"--output={log_dir}/%x_%j.out",
        "--gpus-per-node=0",
        f"--cpus-per-task={min(cpus, 2)}",
        "--time=00:15:00",
        str(SCRIPT),
        *script_args,
    ]
    try:
        result = cluster.run(args, timeout=timeout, check=False, env=job_env(cluster, env), cwd=cwd)
    except subprocess.TimeoutExpired:
        logs = "\n".join(p.read_text(errors="replace")[-4000:] for p in log_dir.glob("*.out"))
        pytest.fail(f"sbatch --wait did not finish within {timeout} s\n{logs}\n{cluster.daemon_log_tails()}")
    job_id = result.stdout.strip().split(";")[0].splitlines()[-1] if result.stdout.strip() else ""
    logs = sorted(log_dir.glob(f"*_{job_id}.out")) if job_id else []
    job_log = logs[0].read_text(errors="replace") if logs else "(no job log)"
    info = cluster.job_info(job_id) if job_id else {}
    if result.returncode != 0:
        print(result.stdout, result.stderr, job_log[-6000:], cluster.daemon_log_tails(), sep="\n")
    return result.returncode, job_log, info


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.slurm
def test_sbatch_launches_torchrun_through_srun(slurm_cluster, dummy_paths, tmp_path):
    """The SLURM path of the script without training: srun starts one torchrun per node, which starts
    two ranks; each rank reports itself. Submitted from another folder, the script still runs from its
    own (where recipes/ and scripts/zero2.json are)."""
    module_dir = tmp_path / "stub"
    module_dir.mkdir()
    (module_dir / "stub_train.py").write_text(
        "import json, os, sys\n"
        "keys = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'SLURM_JOB_ID', 'SLURM_PROCID', 'MASTER_ADDR')\n"
        "record = {k: os.environ.get(k) for k in keys}\n"
        "record['argv'] = sys.argv[1:]\n"
        "out = sys.argv[sys.argv.index('--output_dir') + 1]\n"
        "os.makedirs(out, exist_ok=True)\n"
        "with open(os.path.join(out, f\"rank{record['RANK']}.json\"), 'w') as f:\n"
        "    json.dump(record, f)\n"
    )
    env = clean_env(NPROC=2, TRAIN_MODULE="stub_train", PYTHONPATH=module_dir)
    arguments = flag_tokens(dummy_paths.video, output_dir=tmp_path / "out", max_steps=2)
    rc, job_log, info = sbatch(slurm_cluster, env, tmp_path / "logs", *arguments, timeout=120, cwd=tmp_path)
    assert rc == 0, job_log[-4000:]
    # (the job's record lasts MinJobAge seconds after it ends: check it where it is still there)
    assert not info or (info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0"), info
    assert re.search(r"LAUNCHER\s+slurm", job_log) and "--rdzv_backend c10d" in job_log
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert {r["WORLD_SIZE"] for r in ranks} == {"2"} and {r["LOCAL_RANK"] for r in ranks} == {"0", "1"}
    assert {r["SLURM_PROCID"] for r in ranks} == {"0"}  # one srun task, two torchrun ranks
    assert re.search(rf"RUN_DIR\s+{re.escape(str(REPO))}\n", job_log), job_log[:2000]
    # the recipe, found from the script's folder, then the flags given to sbatch after the script's name
    assert ranks[0]["argv"] == ["--config", "recipes/italian_video.yaml", *arguments]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.slurm
def test_sbatch_trains_and_leaves_a_checkpoint(slurm_cluster, script_assets, tmp_path):
    output = tmp_path / "slurm-run"
    arguments = flag_tokens(TINY_FLAGS, script_assets.video, output_dir=output, deepspeed="scripts/zero2.json")
    start = time.monotonic()
    rc, job_log, info = sbatch(slurm_cluster, clean_env(NPROC=2), tmp_path / "logs", *arguments, timeout=300)
    elapsed = time.monotonic() - start
    assert rc == 0, job_log[-6000:]
    print(f"sbatch --wait, srun + torchrun + DeepSpeed ZeRO-2, 2 CPU processes, 4 steps: {elapsed:.1f} s")
    assert not info or info.get("JobState") == "COMPLETED", info
    assert re.search(r"LAUNCHER\s+slurm", job_log)
    checkpoint = output / "checkpoint-4"
    assert checkpoint.is_dir(), sorted(p.name for p in output.iterdir()) if output.exists() else job_log[-4000:]
    assert list(checkpoint.glob("global_step*")), "no DeepSpeed engine state in the checkpoint"
    assert_final_model_loads(output, script_assets.video["vision_tower"])


@pytest.mark.parametrize("ci", [None, "true"])
def test_slurm_cluster_helper_skips_with_a_reason_when_slurm_is_missing_and_fails_in_ci(monkeypatch, ci):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    cluster = SlurmCluster()
    # both outcomes caught, so that a skip where a failure is due fails this test instead of skipping it
    with pytest.raises((pytest.skip.Exception, pytest.fail.Exception)) as stopped:
        cluster.start()
    assert stopped.type is (pytest.fail.Exception if ci else pytest.skip.Exception)
    assert "SLURM and munge (installed by .ci/setup_slurm.sh" in str(stopped.value)
    assert "not installed: munged, slurmctld, slurmd, sinfo" in str(stopped.value)
    assert not cluster.root.exists()
