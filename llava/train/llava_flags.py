"""LLaVA's and LLaVA-NeXT's training flags: what each one does here, in one table.

LLaVA-1.5's and LLaVA-NeXT's published training scripts pass flags that this trainer either has under the
same name (`--vision_tower`, `--mm_tunable_parts`, `--mm_projector_lr`, ...), or that transformers 5
renamed or dropped, or that belong to features built differently here (anyres tiling, spatial pooling of
video frames, LoRA). Every such flag is decided here, so that a published command line runs with only
its paths changed, or stops at once with one line that names the alternative:

- alias: rewritten to today's name before parsing (`--evaluation_strategy` -> `--eval_strategy`).
- honoured: translated into this trainer's own arguments (`--tune_mm_mlp_adapter` -> tunable parts).
- accepted: parsed and without effect, silently: the value means what this trainer does anyway.
- ignored: without effect here; a value other than LLaVA's default is warned about, with the reason.
- refused: a value other than the allowed ones stops the run with `FlagError`, naming the alternative.
- machine: depends on this machine (`--tf32` without a GPU that has it, `--report_to` an integration
  that is not installed): dropped with a warning, so the same command line runs on a laptop.

`FLAG_RULES` lists the flags this trainer has no field of its own for and says what happens to each;
`LlavaFlagArguments` is the dataclass built from it for the parser (each help text is the rule's reason). `rewrite_argv` applies the aliases and the
machine rules before parsing; `resolve` applies the rest to the parsed arguments.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field

from ..errors import UsageError

logger = logging.getLogger("llava.train")

TUNABLE_PARTS = ("mm_vision_tower", "mm_vision_resampler", "mm_mlp_adapter", "mm_language_model")
ADAPTER_PARTS = ("mm_vision_resampler", "mm_mlp_adapter")

PACKER_DOES_IT = (
    "the fast/slow TokenPacker sets the visual tokens of a clip here (--mm_fast_grid / --mm_slow_grid), "
    "and the spatial/temporal embeddings give their layout"
)
ONE_FRAME_IMAGES = "an image is one frame at the tower's input size here, not a set of tiles"


class FlagError(UsageError):
    """A flag whose value this trainer cannot honour; the message is one line naming the alternative
    (a ValueError too, as UsageError is)."""


def parse_tunable_parts(parts: str) -> set[str]:
    """The names in a --mm_tunable_parts value; FlagError for a name that is not a part."""
    chosen = {p.strip() for p in parts.split(",") if p.strip()}
    unknown = chosen - set(TUNABLE_PARTS)
    if unknown:
        raise FlagError(f"unknown --mm_tunable_parts {sorted(unknown)}; choose from {', '.join(TUNABLE_PARTS)}")
    return chosen


@dataclass(frozen=True)
class Rule:
    type: object
    default: object  # LLaVA's default
    kind: str  # accepted | ignored | refused | honoured
    why: str
    allowed: tuple = ()  # refused: the values that pass besides the default


# The LLaVA / LLaVA-NeXT flags without a field of this trainer's own, with LLaVA's defaults.
FLAG_RULES: dict[str, Rule] = {
    # --- which parts train (LLaVA's older switches; --mm_tunable_parts wins where given)
    "tune_mm_mlp_adapter": Rule(
        bool, False, "honoured", "trains only the adapter: --mm_tunable_parts mm_vision_resampler,mm_mlp_adapter"
    ),
    "tune_mm_vision_resampler": Rule(
        bool, False, "honoured", "trains the resampler (with --tune_mm_mlp_adapter: the whole adapter)"
    ),
    "freeze_backbone": Rule(bool, False, "honoured", "leaves mm_language_model out of the tunable parts"),
    "unfreeze_mm_vision_tower": Rule(bool, False, "honoured", "adds mm_vision_tower to the tunable parts"),
    "unfreeze_language_model": Rule(bool, False, "honoured", "adds mm_language_model to the tunable parts"),
    "freeze_mm_mlp_adapter": Rule(bool, False, "honoured", "leaves mm_mlp_adapter out of the tunable parts"),
    "freeze_mm_vision_resampler": Rule(bool, False, "honoured", "leaves mm_vision_resampler out of the tunable parts"),
    # --- video
    "frames_upbound": Rule(
        int,
        0,
        "honoured",
        "frames read from each clip (--num_frames); a model built for fewer frames reads its own count",
    ),
    "force_sample": Rule(
        bool,
        False,
        "accepted",
        "clips are always sampled at a fixed frame count, spread uniformly (what --force_sample True does)",
    ),
    "video_fps": Rule(
        int,
        1,
        "ignored",
        "clips are read at a fixed frame count (--frames_upbound / --num_frames) spread uniformly over the clip, whatever its length; there is no per-second sampling",
    ),
    "mm_spatial_pool_stride": Rule(int | None, None, "ignored", PACKER_DOES_IT),
    "mm_spatial_pool_mode": Rule(str, "bilinear", "ignored", PACKER_DOES_IT),
    "mm_spatial_pool_out_channels": Rule(int | None, None, "ignored", PACKER_DOES_IT),
    "mm_newline_position": Rule(str, "grid", "ignored", PACKER_DOES_IT + " (there are no newline tokens)"),
    "add_faster_video": Rule(
        bool,
        False,
        "ignored",
        "the packer's fast track (--mm_fast_grid) is always there: it is the 'faster' token stream",
    ),
    "faster_token_stride": Rule(int, 10, "ignored", PACKER_DOES_IT),
    # --- images
    "image_grid_pinpoints": Rule(
        str | None,
        None,
        "refused",
        f"anyres tiling is not supported ({ONE_FRAME_IMAGES}); drop it and use --image_aspect_ratio pad",
    ),
    "image_crop_resolution": Rule(
        int | None,
        None,
        "refused",
        f"highres/crop_split tiling is not supported ({ONE_FRAME_IMAGES}); drop it and use --image_aspect_ratio pad",
    ),
    "image_split_resolution": Rule(
        int | None,
        None,
        "refused",
        f"highres/crop_split tiling is not supported ({ONE_FRAME_IMAGES}); drop it and use --image_aspect_ratio pad",
    ),
    "mm_patch_merge_type": Rule(
        str,
        "flat",
        "refused",
        f"spatial merging of anyres tiles is not supported ({ONE_FRAME_IMAGES}); use --mm_patch_merge_type flat with --image_aspect_ratio pad",
        ("flat",),
    ),
    "mm_vision_select_feature": Rule(
        str,
        "patch",
        "refused",
        "the packer needs the tower's patch grid, and the CLS token has no place in it; use --mm_vision_select_feature patch",
        ("patch",),
    ),
    # --- data
    "lazy_preprocess": Rule(bool, False, "accepted", "samples are always tokenized when read"),
    "is_multimodal": Rule(bool, False, "accepted", "set from --vision_tower, as in LLaVA"),
    "early_mix_text": Rule(
        bool,
        False,
        "honoured",
        "with --group_by_modality_length, text-only samples are batched with the others (length grouping only)",
    ),
    # --- model construction
    "vision_tower_pretrained": Rule(
        str | None,
        None,
        "refused",
        "tower weights come from the --vision_tower folder here; point --vision_tower at the folder that holds them",
    ),
    "delay_load": Rule(bool, True, "accepted", "the tower is loaded when the model is built"),
    "rope_scaling_factor": Rule(
        float | None,
        None,
        "refused",
        "this trainer does not change the language model's positions; set rope_scaling in the language model's config.json",
    ),
    "rope_scaling_type": Rule(
        str | None,
        None,
        "refused",
        "this trainer does not change the language model's positions; set rope_scaling in the language model's config.json",
    ),
    "s2": Rule(
        bool,
        False,
        "refused",
        "S2 multi-scale tower features are not supported (the packer takes one patch grid per frame); drop --s2",
        (False,),
    ),
    "s2_scales": Rule(str, "336,672,1008", "accepted", "used only with --s2, which is refused"),
    "use_pos_skipping": Rule(
        bool, False, "refused", "positional skipping is not supported; drop --use_pos_skipping", (False,)
    ),
    "pos_skipping_range": Rule(int, 4096, "accepted", "used only with --use_pos_skipping, which is refused"),
    "mm_mask_drop_mode": Rule(
        str, "fixed", "ignored", "belongs to LLaVA-NeXT's masked_drop resampler; " + PACKER_DOES_IT
    ),
    "mm_mask_drop_skip_percentage": Rule(
        float, 0.0, "ignored", "belongs to LLaVA-NeXT's masked_drop resampler; " + PACKER_DOES_IT
    ),
    "mm_mask_drop_ratio": Rule(
        float, 0.25, "ignored", "belongs to LLaVA-NeXT's masked_drop resampler; " + PACKER_DOES_IT
    ),
    "mm_mask_drop_ratio_upper": Rule(
        float | None, None, "ignored", "belongs to LLaVA-NeXT's masked_drop resampler; " + PACKER_DOES_IT
    ),
    "mm_mask_drop_ratio_lower": Rule(
        float | None, None, "ignored", "belongs to LLaVA-NeXT's masked_drop resampler; " + PACKER_DOES_IT
    ),
    "mm_perceiver_depth": Rule(int, 3, "ignored", "belongs to LLaVA-NeXT's perceiver resampler; " + PACKER_DOES_IT),
    "mm_perceiver_latents": Rule(int, 32, "ignored", "belongs to LLaVA-NeXT's perceiver resampler; " + PACKER_DOES_IT),
    "mm_perceiver_ff_mult": Rule(
        float, 4.0, "ignored", "belongs to LLaVA-NeXT's perceiver resampler; " + PACKER_DOES_IT
    ),
    "mm_perceiver_pretrained": Rule(
        str | None, None, "ignored", "belongs to LLaVA-NeXT's perceiver resampler; " + PACKER_DOES_IT
    ),
    "mm_qformer_depth": Rule(int, 3, "ignored", "belongs to LLaVA-NeXT's qformer resampler; " + PACKER_DOES_IT),
    "mm_qformer_latents": Rule(int, 32, "ignored", "belongs to LLaVA-NeXT's qformer resampler; " + PACKER_DOES_IT),
    "mm_qformer_pretrained": Rule(
        str | None, None, "ignored", "belongs to LLaVA-NeXT's qformer resampler; " + PACKER_DOES_IT
    ),
    "mpt_attn_impl": Rule(
        str, "triton", "ignored", "MPT's attention comes from --attn_implementation here (transformers' MPT: eager)"
    ),
    # --- training
    "cache_dir": Rule(
        str | None, None, "ignored", "models are read from the folders given or the Hugging Face cache (HF_HOME)"
    ),
    "bits": Rule(
        int,
        16,
        "refused",
        "4/8-bit (QLoRA) training is not supported: it needs LoRA adapters, which this trainer does not build; train in bf16/fp16 (--bf16 True), train fewer parts (--mm_tunable_parts), or use DeepSpeed ZeRO-3",
        (16, 32),
    ),
    "double_quant": Rule(bool, True, "accepted", "used only with --bits 4/8, which is refused"),
    "quant_type": Rule(str, "nf4", "accepted", "used only with --bits 4/8, which is refused"),
    "lora_enable": Rule(
        bool,
        False,
        "refused",
        "LoRA training is not supported: the trainer trains whole parts; train fewer parts (--mm_tunable_parts mm_vision_resampler,mm_mlp_adapter) or use DeepSpeed ZeRO-3 for memory",
        (False,),
    ),
    "lora_r": Rule(int, 64, "accepted", "used only with --lora_enable, which is refused"),
    "lora_alpha": Rule(int, 16, "accepted", "used only with --lora_enable, which is refused"),
    "lora_dropout": Rule(float, 0.05, "accepted", "used only with --lora_enable, which is refused"),
    "lora_weight_path": Rule(str, "", "accepted", "used only with --lora_enable, which is refused"),
    "lora_bias": Rule(str, "none", "accepted", "used only with --lora_enable, which is refused"),
    "group_by_modality_length_auto": Rule(
        bool, False, "honoured", "as --group_by_modality_length (the last, mixed batch is kept rather than dropped)"
    ),
    "group_by_varlen": Rule(bool, False, "honoured", "as --group_by_length: batches of similar lengths"),
    "verbose_logging": Rule(bool, False, "honoured", "logs every argument at the start"),
    "trainer_mode": Rule(
        str,
        "regular",
        "refused",
        "zeroth-order (MeZO) training is not supported; use --trainer_mode regular",
        ("regular",),
    ),
    "zo_eps": Rule(float, 1e-3, "accepted", "used only with --trainer_mode zo, which is refused"),
    "zo_num_directions": Rule(int, 1, "accepted", "used only with --trainer_mode zo, which is refused"),
}

# The dataclass HfArgumentParser reads these flags into: one field per rule, its help the rule's reason.
LlavaFlagArguments = dataclasses.make_dataclass(
    "LlavaFlagArguments",
    [
        (name, rule.type, field(default=rule.default, metadata={"help": f"LLaVA flag, {rule.kind} here: {rule.why}"}))
        for name, rule in FLAG_RULES.items()
    ],
)
FLAG_DEFAULTS = {name: rule.default for name, rule in FLAG_RULES.items()}


# Flags of transformers 4's TrainingArguments that LLaVA scripts pass and transformers 5 renamed or
# dropped, and flags whose meaning depends on this machine: what `rewrite_argv` does with each.
ARGV_RULES = {
    "evaluation_strategy": "alias of --eval_strategy (renamed in transformers 5)",
    "warmup_ratio": "alias: --warmup_steps R, which transformers 5 reads as a share of the steps when R < 1",
    "no_cuda": "alias of --use_cpu (renamed in transformers 5)",
    "gradient_checkpointing": "alias of --activation_checkpointing (its transformers 5 name; the old one warns)",
    "group_by_length": "alias of --train_sampling_strategy group_by_length (batches of similar lengths)",
    "save_safetensors": "accepted: weights are always saved as safetensors",
    "overwrite_output_dir": "ignored (as in LLaVA): a run resumes from the newest complete checkpoint in --output_dir; give a new --output_dir to start afresh",
    "logging_dir": "alias: the TENSORBOARD_LOGGING_DIR environment variable, where transformers 5 reads it",
    "tf32": "machine: kept where the GPU has TF32, dropped with a warning elsewhere (a CPU)",
    "torch_compile": "honoured, except under DeepSpeed ZeRO-3: dropped there with a warning saying why (compiling fails under ZeRO-3 with this code)",
    "report_to": "machine: integrations that are not installed are dropped with a warning",
    "bf16": "machine: `auto` is True on GPUs with bf16 (A100, H100, ...), else False",
    "fp16": "machine: `auto` is True on GPUs without bf16 (V100, T4) where --bf16 is off, else False",
}

# Settings that have two flag names (transformers 4's or LLaVA's, and this trainer's): the same setting,
# so that a command-line flag of one name replaces a recipe's value of the other.
RENAMED = {
    "evaluation_strategy": "eval_strategy",
    "no_cuda": "use_cpu",
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
    "warmup_ratio": "warmup_steps",
    "group_by_length": "train_sampling_strategy",
}


def same_setting(name: str) -> str:
    """The one name of the setting a flag sets."""
    return RENAMED.get(name, name)


COMPILE_FLAGS = ("torch_compile", "torch_compile_backend", "torch_compile_mode")
# Why --torch_compile is dropped under ZeRO-3: two failures seen on this code with torch 2.13, DeepSpeed
# 0.19.8 and accelerate 1.15 (the first with the inductor and eager backends, the second with eager; the same
# runs under ZeRO-2 or without DeepSpeed train).
ZERO3_COMPILE = (
    "torch.compile fails under ZeRO-3 here: it traces partitioned parameters as empty tensors (SigLIP's "
    "attention-pooling head: 'b must be 2D'), and a text-only batch sends the compiled forward into endless "
    "recursion; the run goes on uncompiled (ZeRO-2, or no DeepSpeed, compiles)"
)


# ------------------------------------------------------------------------------------------- argv
def _true(value: str | None) -> bool:
    return value is None or value.strip().lower() in ("true", "1", "yes", "y")


def is_flag(token: str) -> bool:
    """`--name` or `--name=value`; not a value that merely starts with dashes and holds a space, such as
    --eval_milestones' "--minimal-pairs pairs/" (argparse reads such a token as a value too)."""
    name = token.partition("=")[0]
    return token.startswith("--") and not any(c.isspace() for c in name)


def split_flags(argv: list[str]) -> list[tuple[str, str | None]]:
    """`[(name, value)]` for `--name value`, `--name=value` and bare `--name` (value None); a token that
    follows no flag is kept as `("", token)`."""
    out = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if is_flag(token):
            name, eq, value = token[2:].partition("=")
            name = name.replace("-", "_")
            if not eq:
                value = None
                if i + 1 < len(argv) and not is_flag(argv[i + 1]):
                    value = argv[i + 1]
                    i += 1
            out.append((name, value))
        else:
            out.append(("", token))
        i += 1
    return out


def join_flags(flags: list[tuple[str, str | None]]) -> list[str]:
    argv = []
    for name, value in flags:
        if not name:
            argv.append(value)
        else:
            argv.append(f"--{name}")
            if value is not None:
                argv.append(value)
    return argv


def rewrite_argv(argv: list[str]) -> tuple[list[str], list[tuple[int, str]], set[str]]:
    """Applies the aliases and machine rules of ARGV_RULES; returns the new argv, the notes to log
    `(level, message)`, and the names of the flags given."""
    flags = split_flags(argv)
    given = {name for name, _ in flags if name}
    notes: list[tuple[int, str]] = []
    if "warmup_ratio" in given and "warmup_steps" in given:
        raise FlagError(
            "--warmup_ratio and --warmup_steps both given; keep one (transformers 5 reads --warmup_steps below 1 as a ratio)"
        )
    compile_dropped = False
    if any(name in COMPILE_FLAGS and (name != "torch_compile" or _true(value)) for name, value in flags):
        deepspeed = next((value for name, value in flags if name == "deepspeed"), None)
        if deepspeed and zero_stage(deepspeed) == 3:
            compile_dropped = True
            notes.append((logging.WARNING, f"--torch_compile is dropped under DeepSpeed ZeRO-3: {ZERO3_COMPILE}"))
    out = []
    for name, value in flags:
        if compile_dropped and name in COMPILE_FLAGS:
            continue
        if name in ("evaluation_strategy", "no_cuda", "gradient_checkpointing", "gradient_checkpointing_kwargs"):
            out.append((RENAMED[name], value))
        elif name == "warmup_ratio":
            try:
                ratio = float(value)
            except (TypeError, ValueError):
                raise FlagError(f"--warmup_ratio needs a number below 1, got {value!r}") from None
            if not 0 <= ratio < 1:
                raise FlagError(
                    f"--warmup_ratio {value} must be at least 0 and below 1 (a share of the training steps)"
                )
            out.append(("warmup_steps", value))
        elif name == "group_by_length":
            if _true(value):
                out.append(("train_sampling_strategy", "group_by_length"))
        elif name == "save_safetensors":
            if not _true(value):
                notes.append(
                    (logging.WARNING, "--save_safetensors False is ignored: weights are always saved as safetensors")
                )
        elif name == "overwrite_output_dir":
            if _true(value):
                notes.append(
                    (
                        logging.WARNING,
                        f"--overwrite_output_dir is ignored: {ARGV_RULES['overwrite_output_dir'].split(': ', 1)[1]}",
                    )
                )
        elif name == "logging_dir":
            if value:
                os.environ.setdefault("TENSORBOARD_LOGGING_DIR", value)
        elif name == "tf32" and _true(value) and not _tf32_available():
            notes.append(
                (
                    logging.WARNING,
                    "--tf32 True is dropped: this machine has no GPU with TF32 (it is kept on one that has)",
                )
            )
        elif name in ("bf16", "fp16") and value is not None and value.strip().lower() == "auto":
            out.append((name, str(_auto_precision(name, flags))))
        elif name == "report_to":
            kept = _available_reporters(value, notes)
            out.append(("report_to", kept))
        else:
            out.append((name, value))
    return join_flags(out), notes, given


def zero_stage(deepspeed: str) -> int | None:
    """The ZeRO stage of a --deepspeed config (a JSON file or a JSON string); None where it says none."""
    import json

    try:
        if os.path.isfile(deepspeed):
            with open(deepspeed, encoding="utf-8") as f:
                config = json.load(f)
        else:
            config = json.loads(deepspeed)
    except (OSError, ValueError):
        return None  # transformers reports an unreadable config itself
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    return int(stage) if isinstance(stage, (int, str)) and str(stage).isdigit() else None


def _auto_precision(name: str, flags: list[tuple[str, str | None]]) -> bool:
    """`--bf16 auto` / `--fp16 auto`: mixed precision as the GPUs allow; none on a CPU, fp16 only where
    bf16 is off and the GPUs lack it (an explicit --bf16 False on an A100 stays in float32)."""
    import torch

    if not torch.cuda.is_available():
        return False
    has_bf16 = torch.cuda.is_bf16_supported()
    if name == "bf16":
        return has_bf16
    bf16 = next((value for flag, value in reversed(flags) if flag == "bf16"), "False")
    bf16_on = has_bf16 if (bf16 or "").strip().lower() == "auto" else _true(bf16)
    return not bf16_on and not has_bf16


def _tf32_available() -> bool:
    from transformers.utils import is_torch_tf32_available

    return is_torch_tf32_available()


def _available_reporters(value: str | None, notes: list) -> str:
    """The integrations of `--report_to a,b` that are installed ('all' and 'none' pass through)."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    names = [n.strip() for n in (value or "").replace(",", " ").split() if n.strip()]
    if not names or any(n in ("all", "none") for n in names):
        return value or "none"
    available = set(get_available_reporting_integrations())
    missing = [n for n in names if n in INTEGRATION_TO_CALLBACK and n not in available]
    for name in missing:
        notes.append(
            (
                logging.WARNING,
                f"--report_to {name} is dropped: the {name} package is not installed (pip install {name} to report there)",
            )
        )
    kept = [n for n in names if n not in missing]
    return ",".join(kept) if kept else "none"


# ------------------------------------------------------------------------------- parsed arguments
def resolve(model_args, data_args, training_args, flags: LlavaFlagArguments, given: set[str]) -> list[tuple[int, str]]:
    """Applies FLAG_RULES (and the checks of this trainer's own fields that LLaVA scripts set to values
    it cannot honour) to the parsed arguments. Raises FlagError; returns the notes to log."""
    notes: list[tuple[int, str]] = []
    _check_own_fields(model_args, data_args)
    for name, rule in FLAG_RULES.items():
        value, default = getattr(flags, name), FLAG_DEFAULTS[name]
        if value == default or rule.kind in ("accepted", "honoured"):
            continue
        if rule.kind == "refused" and value not in rule.allowed:
            raise FlagError(f"--{name} {value}: {rule.why}")
        if rule.kind == "ignored":
            notes.append((logging.WARNING, f"--{name} {value} has no effect: {rule.why}"))
    model_args.mm_tunable_parts = tunable_parts(model_args, flags, given, notes)
    _frames(data_args, flags, given, notes)
    _sampling(training_args, flags, notes)
    if flags.verbose_logging:
        for title, args in (
            ("model", model_args),
            ("data", data_args),
            ("training", training_args),
            ("LLaVA flags", flags),
        ):
            notes.append((logging.INFO, f"{title} arguments: {vars(args)}"))
    return notes


def _check_own_fields(model_args, data_args) -> None:
    from ..conversation import get_template
    from ..mm_utils import image_aspect_ratio

    if model_args.version:
        try:
            get_template(model_args.version)
        except ValueError as e:
            raise FlagError(str(e)) from None
    if data_args.image_aspect_ratio is not None:
        try:
            image_aspect_ratio(data_args)
        except ValueError as e:
            raise FlagError(f"--{e}") from None
    resampler = model_args.mm_resampler_type
    if resampler not in (None, "", "none", "fast_slow_token_packer"):
        raise FlagError(
            f"--mm_resampler_type {resampler} is not available: the fast/slow TokenPacker (fast_slow_token_packer, "
            "the default) reduces the visual tokens here, sized by --mm_fast_grid/--mm_slow_grid; or none for every patch"
        )


def tunable_parts(model_args, flags: LlavaFlagArguments, given: set[str], notes: list) -> str:
    """The parts to train. `--mm_tunable_parts` decides where given (as in LLaVA-NeXT); otherwise LLaVA's
    older switches are read the way LLaVA-NeXT's train.py reads them, on top of this trainer's default
    (adapter and language model train, the tower is frozen)."""
    legacy = [
        n
        for n in (
            "tune_mm_mlp_adapter",
            "tune_mm_vision_resampler",
            "freeze_backbone",
            "unfreeze_mm_vision_tower",
            "unfreeze_language_model",
            "freeze_mm_mlp_adapter",
            "freeze_mm_vision_resampler",
        )
        if getattr(flags, n) != FLAG_DEFAULTS[n]
    ]
    if "mm_tunable_parts" in given:
        if legacy:
            notes.append((logging.WARNING, f"--{', --'.join(legacy)} ignored: --mm_tunable_parts decides what trains"))
        return model_args.mm_tunable_parts
    if not legacy:
        return model_args.mm_tunable_parts
    if flags.tune_mm_mlp_adapter or flags.tune_mm_vision_resampler:
        # LLaVA freezes everything, then unfreezes what is tuned. The adapter here is the packer, the
        # projector and the embeddings: tuning "the MLP adapter" tunes all of it.
        parts = set(ADAPTER_PARTS) if flags.tune_mm_mlp_adapter else {"mm_vision_resampler"}
    else:
        parts = {"mm_vision_resampler", "mm_mlp_adapter", "mm_language_model"}
        if flags.freeze_backbone:
            parts.discard("mm_language_model")
    if flags.freeze_mm_mlp_adapter:
        parts.discard("mm_mlp_adapter")
    if flags.freeze_mm_vision_resampler:
        parts.discard("mm_vision_resampler")
    if flags.unfreeze_mm_vision_tower:
        parts.add("mm_vision_tower")
    if flags.unfreeze_language_model:
        parts.add("mm_language_model")
    chosen = ",".join(p for p in TUNABLE_PARTS if p in parts)
    notes.append((logging.INFO, f"--{', --'.join(legacy)}: tunable parts {chosen or '(none)'}"))
    return chosen


def _frames(data_args, flags: LlavaFlagArguments, given: set[str], notes: list) -> None:
    upbound = flags.frames_upbound
    if not upbound:
        return
    if upbound < 0:
        raise FlagError(f"--frames_upbound {upbound} must be positive")
    if "num_frames" in given and data_args.num_frames != upbound:
        raise FlagError(
            f"--frames_upbound {upbound} and --num_frames {data_args.num_frames} disagree; give one (both set the frames read per clip)"
        )
    data_args.num_frames = upbound
    if not flags.force_sample:
        notes.append(
            (
                logging.INFO,
                f"--frames_upbound {upbound}: every clip is read at exactly {upbound} frames, spread uniformly (as with --force_sample True)",
            )
        )


def _sampling(training_args, flags: LlavaFlagArguments, notes: list) -> None:
    if flags.group_by_modality_length_auto:
        training_args.group_by_modality_length = True
    if flags.group_by_varlen:
        training_args.train_sampling_strategy = "group_by_length"
    if flags.early_mix_text and training_args.group_by_modality_length:
        training_args.group_by_modality_length = False
        training_args.train_sampling_strategy = "group_by_length"
        notes.append(
            (
                logging.INFO,
                "--early_mix_text: text-only samples share batches with the others; batches are grouped by length only",
            )
        )


def check_model_class_name(name: str | None, family: str) -> None:
    """`--model_class_name LlavaQwenForCausalLM` (LLaVA-NeXT chooses the class by it) must name the family
    that the checkpoint's config.json gives; the family always comes from there."""
    if not name:
        return
    from ..modeling.families import BY_LLAVA_TYPE, FAMILIES

    known = {f.causal_lm: f.llava_type for f in FAMILIES}
    if name not in known:
        raise FlagError(
            f"--model_class_name {name} is not one of {', '.join(sorted(known))}; drop it (the family comes from config.json)"
        )
    if known[name] != family:
        raise FlagError(
            f"--model_class_name {name} does not fit the checkpoint, whose config.json makes it {BY_LLAVA_TYPE[family].causal_lm}; "
            "drop the flag (the family comes from config.json)"
        )


# LLaVA flags that are fields of this trainer's own arguments, with what they do here.
OWN_FLAGS = {
    "version": "honoured: the prompt template (LLaVA's names too); recorded as config.conv_template",
    "model_class_name": "honoured: checked against the family config.json names; a different family is refused",
    "vision_tower": "honoured: the tower's folder or hub id (DINOv2, CLIP, SigLIP)",
    "mm_vision_select_layer": "honoured",
    "mm_projector_type": "honoured: linear, identity, mlpNx_gelu",
    "mm_resampler_type": "honoured: fast_slow_token_packer (default) or none; LLaVA-NeXT's others are refused",
    "pretrain_mm_mlp_adapter": "honoured: loads packer, projector and embeddings (mm_projector.bin)",
    "mm_tunable_parts": "honoured: mm_mlp_adapter without mm_vision_resampler also trains an untrained packer",
    "mm_use_im_start_end": "honoured: <im_start>/<im_end> added and written around the visual block; recorded in the config",
    "mm_use_im_patch_token": "honoured: <im_patch> added to the tokenizer; recorded in the config",
    "image_aspect_ratio": "honoured: square or pad (recorded in the config); anyres*, highres, crop_split refused",
    "add_time_instruction": "honoured: the clip's duration and frame times in the human turn",
    "attn_implementation": "honoured: flash_attention_2 without its package or a GPU falls back to sdpa with a warning",
    "model_max_length": "honoured, at most the language model's positions (more: a warning, and the positions)",
    "mm_projector_lr": "honoured: the adapter's learning rate",
    "mm_vision_tower_lr": "honoured: the tower's learning rate (its own optimizer group)",
    "group_by_modality_length": "honoured: batches of one modality and similar lengths",
}


def flag_table() -> list[tuple[str, str]]:
    """`(flag, what it does here)` for every LLaVA flag decided here (for documentation)."""
    rows = [(f"--{name}", text) for name, text in ARGV_RULES.items()]
    rows += [(f"--{name}", text) for name, text in OWN_FLAGS.items()]
    rows += [(f"--{name}", f"{KIND_TEXT[rule.kind]}: {rule.why}") for name, rule in FLAG_RULES.items()]
    return rows


KIND_TEXT = {
    "honoured": "honoured",
    "accepted": "accepted, no effect",
    "ignored": "no effect (a value other than LLaVA's default is warned about)",
    "refused": "refused unless at LLaVA's default",
}


def markdown_table() -> str:
    """The flag table as Markdown: `python -m llava.train.llava_flags`."""
    lines = ["| LLaVA flag | here |", "| --- | --- |"]
    lines += [f"| `{flag}` | {text.replace('|', '/')} |" for flag, text in flag_table()]
    return "\n".join(lines)


def document() -> str:
    """docs/llava_flags.md: `python -m llava.train.llava_flags > docs/llava_flags.md`."""
    return (
        "# LLaVA's training flags here\n\n"
        "Every flag of LLaVA-1.5's and LLaVA-NeXT's training scripts that this trainer has no plain field for, or\n"
        "handles in its own way, and what it does here. Generated by `python -m llava.train.llava_flags >\n"
        "docs/llava_flags.md` from llava/train/llava_flags.py (a test checks that this file is current).\n\n"
        + markdown_table()
        + "\n"
    )


if __name__ == "__main__":
    print(document(), end="")
