"""Recipes (llava/train/recipe.py): a run's settings as a YAML file of the training's flags, read by
`--config`, with command-line flags winning; the headline recipe as the training parses it; the README's
docs' settings table against the recipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llava.errors import InputError, UsageError
from llava.train import recipe
from llava.train.arguments import FIELDS, parse_args

from train_helpers import ROOT

REQUIRED = ["--model_name_or_path", "unused-lm", "--output_dir", "unused-output"]
VIDEO_RECIPE = ROOT / "recipes" / "italian_video.yaml"
TEXT_RECIPE = ROOT / "recipes" / "italian_text.yaml"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ reading a recipe
def settings(argv):
    """The settings a training command line gives, before parsing (recipe, then flags over it)."""
    return recipe.settings_of(argv, FIELDS).values


def test_command_line_flags_are_laid_over_the_recipe_s(tmp_path):
    path = write(tmp_path, "r.yaml", "learning_rate: 1.0e-4\nmm_fast_grid: [8, 2, 4]\nbf16: false\nversion: plain\n")
    assert settings(["--config", str(path), "--mm_fast_grid", "4", "2", "2", "--seed=3"]) == {
        "learning_rate": 1e-4,
        "mm_fast_grid": ["4", "2", "2"],
        "bf16": False,
        "version": "plain",
        "seed": "3",
    }
    assert settings([f"--config={path}", "--mm-fast-grid", "2", "2", "2"])["mm_fast_grid"] == ["2", "2", "2"]


def test_a_flag_under_another_name_replaces_the_recipe_s_setting(tmp_path):
    # --warmup_ratio (LLaVA's name) and --warmup_steps are one setting: both would be refused together
    path = write(tmp_path, "r.yaml", "warmup_steps: 0.03\nframes_upbound: 16\n")
    assert settings(["--config", str(path), "--warmup_ratio", "0.1", "--num_frames", "4"]) == {
        "warmup_ratio": "0.1",
        "num_frames": "4",
    }
    args = parse_args(["--config", str(path), "--warmup_ratio", "0.1", "--num_frames", "4", *REQUIRED], log=False)
    assert (args.training.warmup_steps, args.vision.num_frames) == (0.1, 4)


def test_none_removes_a_recipe_value_only_where_the_flag_is_unset_by_default(tmp_path):
    path = write(
        tmp_path,
        "r.yaml",
        "deepspeed: scripts/zero2.json\nvision_tower: t\nmm_resampler_type: fast_slow_token_packer\n",
    )
    given = ["--config", str(path), "--deepspeed", "none", "--vision_tower", "None", "--mm_resampler_type", "none"]
    # --mm_resampler_type none means "no resampler" (its default is the packer): it stays
    assert settings(given) == {"mm_resampler_type": "none"}


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
        settings(["--config", str(path)])
    expected = line.format(path=path, real=path.resolve())
    assert f"error: {caught.value}" == expected


def test_a_missing_recipe_and_a_second_config_are_refused():
    with pytest.raises(InputError, match=r"^recipe file not found \(recipes/nope.yaml\)$"):
        settings(["--config", "recipes/nope.yaml"])
    with pytest.raises(UsageError, match="--config given twice"):
        settings(["--config", str(VIDEO_RECIPE), "--config", str(TEXT_RECIPE)])
    with pytest.raises(UsageError, match="--config needs one recipe file"):
        settings(["--seed", "1", "--config"])


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
    args = parse_args(["--config", str(VIDEO_RECIPE), "--output_dir", str(tmp_path / "out")], log=False)
    model, vision, data, training = args.model, args.vision, args.data, args.training
    assert (model.version, vision.vision_tower, vision.mm_vision_select_layer) == ("plain", "facebook/dinov2-large", -2)
    assert (vision.num_frames, vision.mm_fast_grid, vision.mm_slow_grid) == (8, [8, 2, 4], [2, 4, 4])
    assert (vision.mm_projector_type, vision.mm_projector_hidden_size, vision.mm_packer_num_heads) == (
        "mlp2x_gelu",
        2560,
        8,
    )
    assert model.mm_tunable_parts == "mm_vision_resampler,mm_mlp_adapter,mm_language_model"
    assert (training.num_train_epochs, training.per_device_train_batch_size, training.learning_rate) == (80, 8, 5e-5)
    assert (training.mm_projector_lr, training.warmup_steps, training.lr_scheduler_type) == (2e-4, 0.03, "cosine")
    assert (training.model_max_length, data.max_skip_fraction, training.save_every_minutes) == (1024, 0.05, 30)
    assert training.deepspeed == "scripts/zero2.json" and training.output_dir == str(tmp_path / "out")
    assert (training.bf16, training.fp16) == (False, False)  # `auto` on a machine without a GPU


@pytest.mark.parametrize("bf16_gpu, expected", [(True, (True, False)), (False, (False, True))])
def test_auto_precision_follows_the_gpu(monkeypatch, bf16_gpu, expected):
    """`--bf16 auto --fp16 auto`: bf16 on an A100/H100, fp16 on a V100. There is no GPU here: torch.cuda's
    two answers are stood in for (the only mock: what a GPU would say)."""
    import torch

    from llava.train.machine_settings import for_this_machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    settings, _ = for_this_machine({"bf16": "auto", "fp16": "auto"})
    assert (settings["bf16"], settings["fp16"]) == expected
    settings, _ = for_this_machine({"bf16": "False", "fp16": "auto"})  # bf16 turned off by hand on an A100: float32
    assert settings["fp16"] is (not bf16_gpu)


def test_llava_st_stage_recipes_read_as_its_three_stages():
    """recipes/llava_st_stage{1,2,3}.yaml, each on the one before: the settings LLaVA-ST's stage scripts
    give, as this trainer parses them (--stage 2 and 3 set --coordinate_tokens)."""
    stages = {n: parse_args(["--config", str(ROOT / "recipes" / f"llava_st_stage{n}.yaml")]) for n in (1, 2, 3)}
    assert [s.model.coordinate_tokens for s in stages.values()] == [False, True, True]
    assert [s.lora.lora_enable for s in stages.values()] == [False, True, True]
    assert stages[2].lora.lora_r == 128 and stages[2].lora.lora_alpha == 256
    assert stages[1].model.mm_tunable_parts == "mm_vision_resampler,mm_mlp_adapter"
    assert stages[3].lora.load_lora_path == "./checkpoints/llava-st-stage2"
    assert stages[3].vision.pretrain_mm_mlp_adapter in (None, "")
    assert stages[1].model.model_name_or_path == "./models/bambi-gpt2-italian"  # the headline model
