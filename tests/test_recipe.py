"""Recipes (llava/train/recipe.py): a run's settings as a YAML file of the training's flags, read by
`--config`, with command-line flags winning; the headline recipe as the training parses it; the README's
settings table and the launcher's variable list against the recipe."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llava.errors import InputError, UsageError
from llava.train import recipe
from llava.train.train import parse_args, with_recipe

from train_helpers import ROOT

VIDEO_RECIPE = ROOT / "recipes" / "italian_video.yaml"
TEXT_RECIPE = ROOT / "recipes" / "italian_text.yaml"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def value(argv: list[str], flag: str, n: int = 1):
    i = len(argv) - 1 - argv[::-1].index(flag)
    return argv[i + 1] if n == 1 else argv[i + 1 : i + 1 + n]


# ------------------------------------------------------------------------------------ reading a recipe
def test_recipe_flags_come_first_and_a_command_line_flag_replaces_the_recipe_s(tmp_path):
    path = write(tmp_path, "r.yaml", "learning_rate: 1.0e-4\nmm_fast_grid: [8, 2, 4]\nbf16: false\nversion: plain\n")
    argv = with_recipe(["--config", str(path), "--mm_fast_grid", "4", "2", "2", "--seed=3"])
    assert argv == [
        "--learning_rate",
        "0.0001",
        "--bf16",
        "False",
        "--version",
        "plain",
        "--mm_fast_grid",
        "4",
        "2",
        "2",
        "--seed",
        "3",
    ]
    assert with_recipe([f"--config={path}"])[:2] == ["--learning_rate", "0.0001"]


def test_a_flag_under_another_name_replaces_the_recipe_s_setting(tmp_path):
    # --warmup_ratio (LLaVA's name) and --warmup_steps are one setting: both would be refused together
    path = write(tmp_path, "r.yaml", "warmup_steps: 0.03\n")
    assert with_recipe(["--config", str(path), "--warmup_ratio", "0.1"]) == ["--warmup_ratio", "0.1"]


def test_none_removes_a_recipe_value_only_where_the_flag_is_unset_by_default(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        "deepspeed: scripts/zero2.json\nvision_tower: t\nmm_resampler_type: fast_slow_token_packer\n",
    )
    argv = with_recipe(
        ["--config", str(path), "--deepspeed", "none", "--vision_tower", "None", "--mm_resampler_type", "none"]
    )
    # --mm_resampler_type none means "no resampler" (its default is the packer): it stays
    assert argv == ["--mm_resampler_type", "none"]


def test_a_base_recipe_is_read_first_and_null_removes_its_value(tmp_path):
    write(tmp_path, "base.yaml", "vision_tower: t\nvideo_folder: v\nlearning_rate: 1\nseed: 1\n")
    (tmp_path / "runs").mkdir()
    child = write(
        tmp_path / "runs", "child.yaml", "base: ../base.yaml\nvision_tower: null\nvideo_folder: null\nseed: 2\n"
    )
    assert recipe.read(str(child)) == {"learning_rate": 1, "seed": 2}


def test_the_text_recipe_is_the_video_recipe_without_the_tower():
    video, text = recipe.read(str(VIDEO_RECIPE)), recipe.read(str(TEXT_RECIPE))
    assert "vision_tower" not in text and "video_folder" not in text
    assert text["mm_tunable_parts"] == "mm_language_model" and text["data_path"].endswith("train_text.json")
    shared = set(text) - {"data_path", "mm_tunable_parts", "output_dir"}
    assert {k: text[k] for k in shared} == {k: video[k] for k in shared}


@pytest.mark.parametrize(
    "text, line",
    [
        (
            "seed: 1\nlearnig_rate: 2\n",
            "error: unknown setting 'learnig_rate' in the recipe (did you mean 'learning_rate'?); "
            "it takes the training's flag names ({path}:2)",
        ),
        ("- seed\n- 1\n", "error: a recipe is a mapping of flag names to values, not a list ({path})"),
        (
            "seed: 1\nlearning_rate: [1, 2\n",
            "error: the recipe is not valid YAML: expected ',' or ']', but got '<stream end>' ({path}:3:1)",
        ),
        ("", "error: the recipe is empty ({path})"),
        ("seed:\n  a: 1\n", "error: 'seed' must be a value or a list of values, not {{'a': 1}} ({path}:1)"),
        ("base: [a]\n", "error: 'base' must name another recipe file, not ['a'] ({path}:1)"),
        ("base: r.yaml\n", "error: recipe bases form a loop: {real} -> {real} ({path})"),
    ],
)
def test_a_wrong_recipe_is_one_line_naming_the_file_and_line(tmp_path, text, line):

    path = write(tmp_path, "r.yaml", text)
    with pytest.raises(InputError) as caught:
        with_recipe(["--config", str(path)])
    expected = line.format(path=path, real=path.resolve())
    assert f"error: {caught.value}" == expected


def test_a_missing_recipe_and_a_second_config_are_refused():
    with pytest.raises(InputError, match=r"^recipe file not found \(recipes/nope.yaml\)$"):
        with_recipe(["--config", "recipes/nope.yaml"])
    with pytest.raises(UsageError, match="--config given twice"):
        with_recipe(["--config", str(VIDEO_RECIPE), "--config", str(TEXT_RECIPE)])
    with pytest.raises(UsageError, match="--config needs a recipe file"):
        with_recipe(["--seed", "1", "--config"])


def test_recipe_value_prints_a_setting_of_a_command_line():
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "llava.train.recipe", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    assert (
        run("output_dir", "--config", "recipes/italian_text.yaml").stdout
        == "./checkpoints/llava-bambi-gpt2-italian-text\n"
    )
    assert run("output_dir", "--config", "recipes/italian_text.yaml", "--output_dir", "/x").stdout == "/x\n"
    assert run("feature_cache", "--config", "recipes/italian_text.yaml").stdout == "\n"
    missing = run("output_dir", "--config", "nope.yaml")
    assert (missing.returncode, missing.stderr) == (1, "error: recipe file not found (nope.yaml)\n")


# ------------------------------------------------------------------------ the headline recipe, parsed
def test_the_training_parses_the_headline_recipe_as_the_seed_s_run(tmp_path):
    model_args, data_args, training_args = parse_args(
        ["--config", str(VIDEO_RECIPE), "--output_dir", str(tmp_path / "out")], log=False
    )
    assert (model_args.version, model_args.vision_tower, model_args.mm_vision_select_layer) == (
        "plain",
        "facebook/dinov2-large",
        -2,
    )
    assert (data_args.num_frames, model_args.mm_fast_grid, model_args.mm_slow_grid) == (8, [8, 2, 4], [2, 4, 4])
    assert (model_args.mm_projector_type, model_args.mm_projector_hidden_size, model_args.mm_packer_num_heads) == (
        "mlp2x_gelu",
        2560,
        8,
    )
    assert model_args.mm_tunable_parts == "mm_vision_resampler,mm_mlp_adapter,mm_language_model"
    assert (training_args.num_train_epochs, training_args.per_device_train_batch_size, training_args.learning_rate) == (
        80,
        8,
        5e-5,
    )
    assert (training_args.mm_projector_lr, training_args.warmup_steps, training_args.lr_scheduler_type) == (
        2e-4,
        0.03,
        "cosine",
    )
    assert (training_args.model_max_length, data_args.max_skip_fraction, training_args.save_every_minutes) == (
        1024,
        0.05,
        30,
    )
    assert training_args.deepspeed == "scripts/zero2.json" and training_args.output_dir == str(tmp_path / "out")
    assert (training_args.bf16, training_args.fp16) == (False, False)  # `auto` on a machine without a GPU


@pytest.mark.parametrize("bf16_gpu, expected", [(True, ("True", "False")), (False, ("False", "True"))])
def test_auto_precision_follows_the_gpu(monkeypatch, bf16_gpu, expected):
    """`--bf16 auto --fp16 auto`: bf16 on an A100/H100, fp16 on a V100. There is no GPU here: torch.cuda's
    two answers are stood in for (the only mock: what a GPU would say)."""
    import torch

    from llava.train.llava_flags import rewrite_argv

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    argv, _, _ = rewrite_argv(["--bf16", "auto", "--fp16", "auto"])
    assert (value(argv, "--bf16"), value(argv, "--fp16")) == expected
    argv, _, _ = rewrite_argv(["--bf16", "False", "--fp16", "auto"])  # bf16 turned off by hand on an A100: float32
    assert value(argv, "--fp16") == ("False" if bf16_gpu else "True")


# ------------------------------------------------------------- the README table and the launcher's variables
def _script_settings() -> dict[str, str]:
    """The launcher's variable -> flag list (its Settings help, which the script itself reads)."""
    text = (ROOT / "train_italian_video.sh").read_text()
    return dict(re.findall(r"^#   ([A-Z0-9_]+) +--([a-z0-9_]+) ", text, re.M))


def _readme_rows() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| variable | flag | meaning | recipe |", 1)[1].split("\n\n", 1)[0]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in table.strip().splitlines()[1:]]


def test_the_readme_settings_table_is_the_recipe_and_the_launcher_s_variables():
    settings = recipe.read(str(VIDEO_RECIPE))
    flags = _script_settings()
    rows = {}
    for variable, flag, _meaning, recipe_value in _readme_rows():
        rows[variable.strip("`")] = (flag.strip("`"), recipe_value.strip("`"))
    assert {v: f.removeprefix("--") for v, (f, _) in rows.items()} == flags
    for variable, (flag, shown) in rows.items():
        name = flag.removeprefix("--")
        if name in settings:
            raw = settings[name]
            expected = " ".join(map(str, raw)) if isinstance(raw, list) else yaml.safe_dump(raw).splitlines()[0]
            assert shown == expected or (isinstance(raw, float) and float(shown) == raw), (variable, shown, raw)
        else:
            assert shown == "unset", (variable, shown)


def test_every_variable_of_the_launcher_names_a_training_flag():
    from dataclasses import fields

    from llava.train.llava_flags import ARGV_RULES
    from llava.train.train import ARGUMENT_CLASSES

    known = {f.name for cls in ARGUMENT_CLASSES for f in fields(cls)} | set(ARGV_RULES)
    assert set(_script_settings().values()) <= known
    assert set(recipe.read(str(VIDEO_RECIPE))) <= known
