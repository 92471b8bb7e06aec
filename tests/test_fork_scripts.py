"""The LLaVA-ST BabyLM fork's command lines and switches: its Italian video script runs through
train_mem.py with only paths (and its epoch count) changed; LLaVA-ST's fast_slow_resampler becomes the
packer, its latent counts the nearest grids; the fork's environment variables read as the flags they stand
for; what cannot be honoured (Llama-2's chat template on GPT-2) is one line."""

import json
import logging
from pathlib import Path

import pytest
from transformers import AutoConfig

from llava.train import fork_flags, legacy_flags

from llava_script_helpers import FORK_ENVIRONMENT, fork_script_args, make_llava_assets, run_train_mem


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_llava_assets(tmp_path_factory.mktemp("fork_assets"))


def media_by_path(assets, folder, script):
    """The tiny clips' (or images') JSON with each file named by its full path, as the fork's data names
    them (its scripts give '.' or no media folder)."""
    video = script == "train_italian_video.sh"
    kind, source, media = ("video", "train", "video_folder") if video else ("image", "images", "image_folder")
    samples = json.loads(Path(assets[source]).read_text())
    for sample in samples:
        sample[kind] = f"{assets[media]}/{sample[kind]}"
    path = folder / f"{kind}_data.json"
    path.write_text(json.dumps(samples))
    return path


# the tiny tower's 8x8 patches: 9 fast tokens per frame -> 2x4 on all 4 frames, 81 slow -> 8x8 on 2 frames
ITALIAN_VIDEO_SAID = (
    "--mm_perceiver_latents 81: the slow track's 8x8 tokens per frame (--mm_slow_grid 2 8 8); 81 per frame cannot tile"
)
# 64 and 32 tile exactly, on 8 frames (the default count: the script sets none)
LN_T_SAID = "BABYLM_ENABLED=true: a model is saved at BabyLM's word milestones"


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, fast, slow, said",
    [
        ("train_italian_video.sh", [4, 2, 4], [2, 8, 8], ITALIAN_VIDEO_SAID),
        ("train_ln_t.sh", [8, 4, 8], [2, 8, 8], LN_T_SAID),
    ],
)
def test_the_forks_scripts_train_with_only_their_paths_changed(assets, tmp_path, script, fast, slow, said):
    out = tmp_path / "ckpt"
    args = fork_script_args(script, assets, out, media_by_path(assets, tmp_path, script))
    result = run_train_mem(args, environment=FORK_ENVIRONMENT[script])
    assert result.returncode == 0, result.stderr[-4000:]
    config = AutoConfig.from_pretrained(out)
    assert (config.mm_fast_grid, config.mm_slow_grid) == (fast, slow)
    assert config.conv_template == "plain"  # USE_PLAIN_LM=1, whatever --version says
    assert said in result.stderr
    assert "USE_PLAIN_LM=1: plain language-model text (--version plain), not --version llama_v2" in result.stderr


def translate(settings: dict, monkeypatch, **environment):
    for name in (
        "USE_PLAIN_LM",
        "MM_PERCEIVER_LATENTS",
        "MM_PERCEIVER_LATENTS_FAST",
        "BABYLM_ENABLED",
        "BABYLM_WORD_LIMIT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return legacy_flags.translate(settings)


@pytest.mark.parametrize(
    "tokens, side, grid",
    [(81, 16, (8, 8)), (9, 16, (2, 4)), (64, 16, (8, 8)), (32, 16, (4, 8)), (81, 8, (8, 8)), (9, 27, (3, 3))],
)
def test_a_latent_count_becomes_the_nearest_grid_that_tiles_the_patches(tokens, side, grid):
    assert fork_flags.nearest_grid(tokens, side) == grid


def test_the_resampler_and_its_latents_become_the_packers_grids(assets, monkeypatch):
    settings = {"vision_tower": assets["tower"], "mm_resampler_type": "fast_slow_resampler", "num_frames": "8"}
    result = translate(settings | {"mm_perceiver_latents": "64", "mm_perceiver_latents_fast": "32"}, monkeypatch)
    assert result.settings["mm_resampler_type"] == "fast_slow_token_packer"
    assert (result.settings["mm_fast_grid"], result.settings["mm_slow_grid"]) == ([8, 4, 8], [2, 8, 8])
    assert result.refusal is None and all(level == logging.INFO for level, _ in result.notes)  # both tile exactly
    from_environment = translate(settings, monkeypatch, MM_PERCEIVER_LATENTS="64", MM_PERCEIVER_LATENTS_FAST="32")
    assert from_environment.settings["mm_slow_grid"] == [2, 8, 8]
    with pytest.raises(legacy_flags.FlagError, match="MM_PERCEIVER_LATENTS=81 and --mm_perceiver_latents 64 disagree"):
        translate(settings | {"mm_perceiver_latents": "64"}, monkeypatch, MM_PERCEIVER_LATENTS="81")
    with pytest.raises(
        legacy_flags.FlagError, match="--mm_perceiver_latents and --mm_slow_grid both size the slow track"
    ):
        translate(settings | {"mm_perceiver_latents": "64", "mm_slow_grid": "2 4 4"}, monkeypatch)
    elsewhere = translate({"mm_perceiver_latents": "64"}, monkeypatch)  # LLaVA-NeXT's perceiver: not built
    assert elsewhere.notes[0][0] == logging.WARNING and "has no effect" in elsewhere.notes[0][1]


def test_the_forks_babylm_switches_are_word_milestones_and_a_word_limit(monkeypatch):
    result = translate({}, monkeypatch, BABYLM_ENABLED="true", BABYLM_WORD_LIMIT="100000000")
    assert result.settings["babylm_word_milestones"] is True and result.settings["max_words"] == 100_000_000
    assert "babylm_word_milestones" not in translate({}, monkeypatch, BABYLM_ENABLED="false").settings


def test_what_cannot_be_honoured_is_one_line(assets, monkeypatch):
    with pytest.raises(
        legacy_flags.FlagError, match="--version llama_v2 is Llama-2's chat template.*use --version plain"
    ):
        translate({"model_name_or_path": assets["gpt2"], "version": "llama_v2"}, monkeypatch)
    plain = translate({"model_name_or_path": assets["gpt2"], "version": "llama_v2"}, monkeypatch, USE_PLAIN_LM="1")
    assert plain.settings["version"] == "plain"
    with pytest.raises(legacy_flags.FlagError, match="--stage 4: LLaVA-ST's stages are 1, 2 and 3"):
        translate({"stage": "4"}, monkeypatch)


def test_llava_st_stages_two_and_three_train_with_coordinate_tokens(monkeypatch):
    for stage in ("2", "3"):
        result = translate({"stage": stage}, monkeypatch)
        assert result.refusal is None and result.settings["coordinate_tokens"] is True
        assert any(f"--stage {stage}: the model trains with coordinate tokens" in note for _, note in result.notes)
    first = translate({"stage": "1", "use_downsample_image": "False"}, monkeypatch)
    assert first.refusal is None and "coordinate_tokens" not in first.settings
