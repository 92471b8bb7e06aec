"""LLaVA's and LLaVA-NeXT's training flags, parsed as their scripts pass them: each is renamed,
translated, accepted, warned about or refused in one line (llava/train/legacy_flags.py). Parsing only: no
model is built."""

import pytest

from llava.train import command_line
from llava.train.arguments import parse_args
from llava.train.legacy_flags import LEGACY_FLAGS, FlagError, Kind

BASE = ["--model_name_or_path", "unused-lm", "--output_dir", "unused-output"]


def parse(*flags):
    return parse_args([*BASE, *flags])


def test_renamed_training_flags_are_aliases():
    args = parse(
        "--evaluation_strategy",
        "no",
        "--warmup_ratio",
        "0.03",
        "--group_by_length",
        "True",
        "--save_safetensors",
        "True",
    ).training
    assert args.eval_strategy == "no" and args.warmup_steps == 0.03
    assert args.get_warmup_steps(1000) == 30  # transformers 5 reads warmup_steps < 1 as a ratio
    assert args.train_sampling_strategy == "group_by_length"
    with pytest.raises(FlagError, match="--warmup_ratio 0.03 and --warmup_steps 10 both given; keep one"):
        parse("--warmup_ratio", "0.03", "--warmup_steps", "10")
    with pytest.raises(FlagError, match="below 1"):
        parse("--warmup_ratio", "1.5")


def logged(capsys, level):
    """Messages logged at `level` (parse_args sets up logging to stderr)."""
    return [
        line.split(" llava.train: ", 1)[1]
        for line in capsys.readouterr().err.splitlines()
        if f" {level} llava.train: " in line
    ]


def test_machine_dependent_flags_are_dropped_with_a_warning_here(capsys):
    args = parse("--tf32", "True", "--report_to", "wandb").training
    assert args.tf32 is None and args.report_to == []
    warnings = logged(capsys, "WARNING")
    assert any(w.startswith("--tf32 True is dropped") for w in warnings)
    assert any(w.startswith("--report_to wandb is dropped: the wandb package is not installed") for w in warnings)


@pytest.mark.parametrize(
    "flags, alternative",
    [
        (["--image_aspect_ratio", "anyres_max_9"], "use 'pad'"),
        (["--image_aspect_ratio", "anyres"], "use 'pad'"),
        (["--image_aspect_ratio", "highres"], "use 'pad'"),
        (["--image_aspect_ratio", "crop_split"], "use 'pad'"),
        (["--image_grid_pinpoints", "(1x1),...,(6x6)"], "--image_aspect_ratio pad"),
        (["--mm_patch_merge_type", "spatial_unpad"], "--image_aspect_ratio pad"),
        (["--mm_patch_merge_type", "spatial"], "--image_aspect_ratio pad"),
        (["--mm_vision_select_feature", "cls_patch"], "--mm_vision_select_feature patch"),
        (["--bits", "4"], "--lora_enable"),
        (["--lora_weight_path", "adapter.bin"], "--load_lora_path"),
        (["--mm_resampler_type", "spatial_pool"], "fast_slow_token_packer"),
        (["--trainer_mode", "zo"], "--trainer_mode regular"),
        (["--vision_tower_pretrained", "x.bin"], "--vision_tower"),
        (["--rope_scaling_factor", "2"], "config.json"),
        (["--frames_upbound", "16", "--num_frames", "8"], "keep one"),
        (["--version", "v9"], "choose one of"),
    ],
)
def test_what_cannot_be_honoured_is_refused_in_one_line_naming_the_alternative(flags, alternative):
    with pytest.raises(FlagError) as refused:
        parse(*flags)
    message = str(refused.value)
    assert "\n" not in message and alternative in message and flags[0] in message, message


def test_video_pooling_flags_warn_that_the_packer_sets_the_tokens(capsys):
    parse(
        "--mm_spatial_pool_stride",
        "2",
        "--mm_newline_position",
        "grid",
        "--force_sample",
        "True",
        "--lazy_preprocess",
        "True",
        "--is_multimodal",
        "True",
        "--mm_patch_merge_type",
        "flat",
        "--mm_vision_select_feature",
        "patch",
    )
    warnings = logged(capsys, "WARNING")
    assert len(warnings) == 1, warnings  # default-valued and harmless flags pass silently
    assert warnings[0].startswith("--mm_spatial_pool_stride 2 has no effect") and "--mm_fast_grid" in warnings[0]
    parse("--mm_newline_position", "one_token", "--add_faster_video", "True", "--video_fps", "2")
    warned = " ".join(logged(capsys, "WARNING"))
    for flag in ("--mm_newline_position one_token", "--add_faster_video True", "--video_fps 2"):
        assert flag in warned


@pytest.mark.parametrize(
    "flags, parts",
    [
        ([], "mm_vision_resampler,mm_mlp_adapter,mm_language_model"),
        (["--tune_mm_mlp_adapter", "True"], "mm_vision_resampler,mm_mlp_adapter"),
        (["--tune_mm_vision_resampler", "True"], "mm_vision_resampler"),
        (["--freeze_backbone", "True"], "mm_vision_resampler,mm_mlp_adapter"),
        (
            ["--unfreeze_mm_vision_tower", "True"],
            "mm_vision_tower,mm_vision_resampler,mm_mlp_adapter,mm_language_model",
        ),
        (["--freeze_mm_mlp_adapter", "True"], "mm_vision_resampler,mm_language_model"),
        (
            ["--tune_mm_mlp_adapter", "True", "--unfreeze_mm_vision_tower", "True"],
            "mm_vision_tower,mm_vision_resampler,mm_mlp_adapter",
        ),
        # LLaVA-NeXT: --mm_tunable_parts decides where given
        (["--mm_tunable_parts", "mm_mlp_adapter", "--freeze_backbone", "True"], "mm_mlp_adapter"),
    ],
)
def test_llava_switches_map_onto_tunable_parts(flags, parts):
    assert parse(*flags).model.mm_tunable_parts == parts


def test_frames_upbound_sets_the_frames_per_clip_and_other_grouping_flags():
    assert parse("--frames_upbound", "32", "--force_sample", "True").vision.num_frames == 32
    assert parse("--group_by_modality_length_auto", "True").training.group_by_modality_length
    args = parse("--group_by_modality_length", "True", "--early_mix_text", "True").training
    assert not args.group_by_modality_length and args.train_sampling_strategy == "group_by_length"


def test_flag_forms():
    line = command_line.read(["--a=1", "--b", "2", "--c", "--d", "-2", "--e-f", "x", "y", "--a", "3"])
    assert line.flags == {"b": "2", "c": None, "d": "-2", "e_f": ["x", "y"], "a": "3"}
    assert command_line.tokens(line.flags) == ["--b", "2", "--c", "--d", "-2", "--e_f", "x", "y", "--a", "3"]


def test_every_legacy_flag_says_what_it_does_and_is_of_one_kind():
    assert all(flag.why and isinstance(flag.kind, Kind) for flag in LEGACY_FLAGS.values())
    renamed = {name: flag.today for name, flag in LEGACY_FLAGS.items() if flag.kind is Kind.RENAMED}
    assert renamed["frames_upbound"] == "num_frames" and renamed["evaluation_strategy"] == "eval_strategy"
    # a refused flag names what to do instead
    refused = [flag.why for flag in LEGACY_FLAGS.values() if flag.kind is Kind.REFUSED]
    assert all(any(w in why for w in ("use", "drop", "point", "set", "train")) for why in refused), refused


def test_help_lists_the_llava_flags(capsys):
    with pytest.raises(SystemExit) as done:
        parse_args(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--frames_upbound" in out and "LLaVA flag, refused unless at LLaVA's default" in out


def test_a_value_that_starts_with_dashes_and_holds_a_space_is_a_value():
    # --eval_milestones takes another command's arguments as one value
    argv = ["--eval_milestones", "--minimal-pairs /data/pairs-it --device cpu", "--seed", "1"]
    flags = command_line.read(argv).flags
    assert flags == {"eval_milestones": "--minimal-pairs /data/pairs-it --device cpu", "seed": "1"}
    assert command_line.tokens(flags) == argv
    assert parse(*argv).training.eval_milestones == "--minimal-pairs /data/pairs-it --device cpu"


def test_jit_checkpoints_are_left_to_this_trainer_s_own_stop_handling(capsys):
    # transformers' SIGTERM handler would replace the one that saves at a step all ranks agree on
    assert parse("--enable_jit_checkpoint", "True").training.enable_jit_checkpoint is False
    assert any(w.startswith("--enable_jit_checkpoint is not used") for w in logged(capsys, "WARNING"))
