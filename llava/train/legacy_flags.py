"""LLaVA's, LLaVA-NeXT's and transformers 4's training flags that this trainer has no field of its own
for: what each one does here, in one table.

LLaVA-1.5's and LLaVA-NeXT's published scripts pass flags that transformers 5 renamed or dropped, or that
belong to features built differently here (anyres tiling, spatial pooling of video frames, quantization). Every
such flag is decided in `LEGACY_FLAGS`, so that a published command line runs with only its paths
changed, or stops at once with one line naming the alternative. `translate` turns a run's settings (a
mapping, recipe.py) into settings of this trainer's own argument classes before they are parsed; the
argument parser lists the flags in `--help` (arguments.py). LLaVA's flags that are fields of
this trainer's own (`--vision_tower`, `--mm_tunable_parts`, ...) need no entry: their help says what
they do. This module imports neither torch nor transformers.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import Enum

from ..errors import UsageError
from .tunable_parts import from_llava_switches

Note = tuple[int, str]  # (logging level, message)


class FlagError(UsageError):
    """A flag whose value this trainer cannot honour; the message is one line naming the alternative
    (a ValueError too, as UsageError is)."""


class Kind(Enum):
    """What a legacy flag does here; the value is how the documentation says it."""

    RENAMED = "the same setting as"
    TRANSLATED = "translated"
    ALREADY_SO_HERE = "accepted silently"
    HAS_NO_EFFECT = "no effect here, and a warning unless at LLaVA's default"
    REFUSED = "refused unless at LLaVA's default"


@dataclass(frozen=True)
class LegacyFlag:
    kind: Kind
    why: str
    type: type = bool  # how a value of it is read: bool, int, float or str
    default: object = False  # LLaVA's (or transformers 4's) default
    allowed: tuple = ()  # REFUSED: values that pass besides the default
    today: str | None = None  # RENAMED: this trainer's name of the setting

    def read(self, name: str, value):
        """A value of this flag from the settings (a command-line token, a recipe's value, or None for a
        bare flag), as its type; FlagError where it is not one."""
        if self.type is bool:
            return as_bool(value, f"--{name}")
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        try:
            return self.type(value)
        except (TypeError, ValueError):
            kind = "a number" if self.type in (int, float) else "a value"
            raise FlagError(f"--{name} takes {kind}, not {value!r}") from None


def as_bool(value, flag: str) -> bool:
    """A yes/no setting as the argument parser reads it (true/false, yes/no, 1/0, a YAML boolean, or None
    for a bare flag, which means yes)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "1", "t"):
        return True
    if text in ("false", "no", "n", "0", "f"):
        return False
    raise FlagError(f"{flag} takes true or false, not {value!r}")


PACKER_DOES_IT = (
    "the fast/slow TokenPacker sets the visual tokens of a clip here (--mm_fast_grid / --mm_slow_grid), "
    "and the spatial/temporal embeddings give their layout"
)
ONE_FRAME_IMAGES = "an image is one frame at the tower's input size here, not a set of tiles"
TILING = f"not supported ({ONE_FRAME_IMAGES}); drop it and use --image_aspect_ratio pad"
POSITIONS = (
    "this trainer does not change the language model's positions; set rope_scaling in the language model's config.json"
)


def _renamed(today: str, why: str, type=bool, default=False) -> LegacyFlag:
    return LegacyFlag(Kind.RENAMED, why, type, default, today=today)


def _translated(why: str, type=bool, default=False) -> LegacyFlag:
    return LegacyFlag(Kind.TRANSLATED, why, type, default)


def _already(why: str, type=bool, default=False) -> LegacyFlag:
    return LegacyFlag(Kind.ALREADY_SO_HERE, why, type, default)


def _no_effect(why: str, type=bool, default=False) -> LegacyFlag:
    return LegacyFlag(Kind.HAS_NO_EFFECT, why, type, default)


def _refused(why: str, type=str, default=None, allowed: tuple = ()) -> LegacyFlag:
    return LegacyFlag(Kind.REFUSED, why, type, default, allowed)


def _resampler_flag(resampler: str, type, default) -> LegacyFlag:
    return _no_effect(f"belongs to LLaVA-NeXT's {resampler} resampler; {PACKER_DOES_IT}", type, default)


def _used_only_with(flag: str, type, default) -> LegacyFlag:
    return _already(f"used only with {flag}, which is refused", type, default)


# name -> what it does here, with LLaVA's default.
LEGACY_FLAGS: dict[str, LegacyFlag] = {
    # --- transformers 4's TrainingArguments, renamed or dropped in transformers 5
    "evaluation_strategy": _renamed("eval_strategy", "renamed in transformers 5", str, "no"),
    "no_cuda": _renamed("use_cpu", "renamed in transformers 5"),
    "gradient_checkpointing": _renamed("activation_checkpointing", "its transformers 5 name; the old one warns"),
    "gradient_checkpointing_kwargs": _renamed("activation_checkpointing_kwargs", "its transformers 5 name", str, None),
    "warmup_ratio": _renamed(
        "warmup_steps", "transformers 5 reads --warmup_steps R as a share of the steps when R < 1", float, 0.0
    ),
    "group_by_length": _translated("--train_sampling_strategy group_by_length: batches of similar lengths"),
    "save_safetensors": _no_effect("weights are always saved as safetensors", bool, True),
    "overwrite_output_dir": _no_effect(
        "as in LLaVA: a run resumes from the newest complete checkpoint in --output_dir; give a new --output_dir to start afresh"
    ),
    "logging_dir": _translated(
        "the TENSORBOARD_LOGGING_DIR environment variable, where transformers 5 reads it", str, None
    ),
    # --- which parts train (LLaVA's older switches; --mm_tunable_parts wins where given)
    "tune_mm_mlp_adapter": _translated(
        "trains only the adapter: --mm_tunable_parts mm_vision_resampler,mm_mlp_adapter"
    ),
    "tune_mm_vision_resampler": _translated("trains the resampler (with --tune_mm_mlp_adapter: the whole adapter)"),
    "freeze_backbone": _translated("leaves mm_language_model out of --mm_tunable_parts"),
    "unfreeze_mm_vision_tower": _translated("adds mm_vision_tower to --mm_tunable_parts"),
    "unfreeze_language_model": _translated("adds mm_language_model to --mm_tunable_parts"),
    "freeze_mm_mlp_adapter": _translated("leaves mm_mlp_adapter out of --mm_tunable_parts"),
    "freeze_mm_vision_resampler": _translated("leaves mm_vision_resampler out of --mm_tunable_parts"),
    # --- video
    "frames_upbound": _renamed(
        "num_frames", "frames read from each clip; a model built for fewer frames reads its own count", int, 0
    ),
    "force_sample": _already(
        "clips are always sampled at a fixed frame count, spread uniformly (what --force_sample True does)"
    ),
    "video_fps": _no_effect(
        "clips are read at a fixed frame count (--num_frames) spread uniformly over the clip, whatever its length; there is no per-second sampling",
        int,
        1,
    ),
    "mm_spatial_pool_stride": _no_effect(PACKER_DOES_IT, int, None),
    "mm_spatial_pool_mode": _no_effect(PACKER_DOES_IT, str, "bilinear"),
    "mm_spatial_pool_out_channels": _no_effect(PACKER_DOES_IT, int, None),
    "mm_newline_position": _no_effect(PACKER_DOES_IT + " (there are no newline tokens)", str, "grid"),
    "add_faster_video": _no_effect(
        "the packer's fast track (--mm_fast_grid) is always there: it is the 'faster' token stream"
    ),
    "faster_token_stride": _no_effect(PACKER_DOES_IT, int, 10),
    # --- images
    "image_grid_pinpoints": _refused(f"anyres tiling is {TILING}"),
    "image_crop_resolution": _refused(f"highres/crop_split tiling is {TILING}", int),
    "image_split_resolution": _refused(f"highres/crop_split tiling is {TILING}", int),
    "mm_patch_merge_type": _refused(
        f"spatial merging of anyres tiles is not supported ({ONE_FRAME_IMAGES}); use --mm_patch_merge_type flat with --image_aspect_ratio pad",
        str,
        "flat",
    ),
    "mm_vision_select_feature": _refused(
        "the packer needs the tower's patch grid, and the CLS token has no place in it; use --mm_vision_select_feature patch",
        str,
        "patch",
    ),
    # --- data
    "lazy_preprocess": _already("samples are always tokenized when read"),
    "is_multimodal": _already("set from --vision_tower, as in LLaVA"),
    "early_mix_text": _translated(
        "with --group_by_modality_length, text-only samples are batched with the others (length grouping only)"
    ),
    # --- model construction
    "vision_tower_pretrained": _refused(
        "tower weights come from the --vision_tower folder here; point --vision_tower at the folder that holds them"
    ),
    "delay_load": _already("the tower is loaded when the model is built", bool, True),
    "rope_scaling_factor": _refused(POSITIONS, float),
    "rope_scaling_type": _refused(POSITIONS),
    "s2": _refused(
        "S2 multi-scale tower features are not supported (the packer takes one patch grid per frame); drop --s2",
        bool,
        False,
    ),
    "s2_scales": _used_only_with("--s2", str, "336,672,1008"),
    "use_pos_skipping": _refused("positional skipping is not supported; drop --use_pos_skipping", bool, False),
    "pos_skipping_range": _used_only_with("--use_pos_skipping", int, 4096),
    "mm_mask_drop_mode": _resampler_flag("masked_drop", str, "fixed"),
    "mm_mask_drop_skip_percentage": _resampler_flag("masked_drop", float, 0.0),
    "mm_mask_drop_ratio": _resampler_flag("masked_drop", float, 0.25),
    "mm_mask_drop_ratio_upper": _resampler_flag("masked_drop", float, None),
    "mm_mask_drop_ratio_lower": _resampler_flag("masked_drop", float, None),
    "mm_perceiver_depth": _resampler_flag("perceiver", int, 3),
    "mm_perceiver_latents": _translated(
        "with --mm_resampler_type fast_slow_resampler (LLaVA-ST's), the slow track's tokens per frame: "
        "--mm_slow_grid (the nearest grid that tiles the tower's patches); with LLaVA-NeXT's perceiver, no effect",
        int,
        32,
    ),
    "mm_perceiver_latents_fast": _translated(
        "with --mm_resampler_type fast_slow_resampler, the fast track's tokens per frame: --mm_fast_grid", int, None
    ),
    "mm_perceiver_ff_mult": _resampler_flag("perceiver", float, 4.0),
    "mm_perceiver_pretrained": _resampler_flag("perceiver", str, None),
    "mm_qformer_depth": _resampler_flag("qformer", int, 3),
    "mm_qformer_latents": _resampler_flag("qformer", int, 32),
    "mm_qformer_pretrained": _resampler_flag("qformer", str, None),
    "mpt_attn_impl": _no_effect(
        "MPT's attention comes from --attn_implementation here (transformers' MPT: eager)", str, "triton"
    ),
    # --- LLaVA-ST's
    "stage": _translated(
        "LLaVA-ST's training stage: 1 (content alignment) trains as every run here does; 2 (coordinate "
        "alignment) and 3 (multi-task instruction tuning) give the model coordinate tokens (--coordinate_tokens)",
        str,
        None,
    ),
    "use_downsample_image": _no_effect(PACKER_DOES_IT + " (an image is one frame)", bool, False),
    # --- training
    "cache_dir": _no_effect("models are read from the folders given or the Hugging Face cache (HF_HOME)", str, None),
    "bits": _refused(
        "4/8-bit (QLoRA) training is not supported: LoRA adapters train on a 16/32-bit model here; use --lora_enable True with --bf16 True, train fewer parts (--mm_tunable_parts), or use DeepSpeed ZeRO-3",
        int,
        16,
        (32,),
    ),
    "double_quant": _used_only_with("--bits 4/8", bool, True),
    "quant_type": _used_only_with("--bits 4/8", str, "nf4"),
    "lora_weight_path": _refused(
        "LLaVA defines it and never reads it; to start from a trained adapter use --load_lora_path (LLaVA-ST's: it is merged, then a new adapter trains on top)",
        str,
        "",
    ),
    "group_by_modality_length_auto": _renamed(
        "group_by_modality_length", "LLaVA-NeXT's variant; the last, mixed batch is kept rather than dropped"
    ),
    "group_by_varlen": _translated("--train_sampling_strategy group_by_length: batches of similar lengths"),
    "verbose_logging": _translated("logs every argument at the start"),
    "trainer_mode": _refused(
        "zeroth-order (MeZO) training is not supported; use --trainer_mode regular", str, "regular"
    ),
    "zo_eps": _used_only_with("--trainer_mode zo", float, 1e-3),
    "zo_num_directions": _used_only_with("--trainer_mode zo", int, 1),
}

# A legacy name -> this trainer's name of the same setting: a command-line flag of one name replaces a
# recipe's value of the other.
_TODAY = {name: flag.today for name, flag in LEGACY_FLAGS.items() if flag.kind is Kind.RENAMED}


def same_setting(name: str) -> str:
    """The one name of the setting a flag sets."""
    return _TODAY.get(name, name)


def describe(name: str) -> str:
    """What the flag does here, in one line (the --help text and the documentation)."""
    flag = LEGACY_FLAGS[name]
    if flag.kind is Kind.RENAMED:
        return f"{Kind.RENAMED.value} --{flag.today} ({flag.why})"
    return f"{flag.kind.value}: {flag.why}"


# ----------------------------------------------------------------------------------------- translation
@dataclass
class Translation:
    """A run's settings with every legacy flag turned into this trainer's own, what to log about it,
    whether --verbose_logging asked for every argument in the log, and the one-line refusal of a flag this
    trainer cannot honour (raised by the caller once this trainer's own settings are checked, which come
    first)."""

    settings: dict[str, object]
    notes: list[Note]
    verbose: bool = False
    refusal: FlagError | None = None


def translate(settings: dict[str, object]) -> Translation:
    """The settings with the legacy flags decided: renamed ones under today's name, translated ones as
    the settings they mean, the rest checked (the first refused one becomes the Translation's refusal)
    and dropped."""
    legacy = {name: LEGACY_FLAGS[name].read(name, value) for name, value in settings.items() if name in LEGACY_FLAGS}
    own = {name: value for name, value in settings.items() if name not in LEGACY_FLAGS}
    notes: list[Note] = []
    refusal = None
    for name, value in legacy.items():
        flag = LEGACY_FLAGS[name]
        if value == flag.default or value in flag.allowed:
            continue
        if flag.kind is Kind.REFUSED:
            refusal = refusal or FlagError(f"--{name} {value}: {flag.why}")
        if flag.kind is Kind.HAS_NO_EFFECT:
            notes.append((logging.WARNING, f"--{name} {value} has no effect: {flag.why}"))
        if flag.kind is Kind.RENAMED:
            _rename(own, name, value, notes)
    from . import fork_flags  # it reads this table

    fork_flags.read_environment(own, legacy, notes, os.environ)
    fork_flags.packer_from_latents(own, legacy, notes)
    fork_flags.coordinates_from_stage(own, legacy, notes)
    parts = from_llava_switches(legacy, own.get("mm_tunable_parts"), notes)
    if parts is not None:
        own["mm_tunable_parts"] = parts
    _sampling(own, legacy, notes)
    if legacy.get("logging_dir"):
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", legacy["logging_dir"])
    return Translation(own, notes, bool(legacy.get("verbose_logging")), refusal)


def _rename(own: dict, name: str, value, notes: list[Note]) -> None:
    today = LEGACY_FLAGS[name].today
    if name == "warmup_ratio" and not 0 <= value < 1:
        raise FlagError(f"--warmup_ratio {value} must be at least 0 and below 1 (a share of the training steps)")
    if name == "frames_upbound":
        if value < 0:
            raise FlagError(f"--frames_upbound {value} must be positive")
        notes.append(
            (logging.INFO, f"--frames_upbound {value}: every clip is read at exactly {value} frames, spread uniformly")
        )
    if today in own and str(own[today]) != str(value):
        raise FlagError(f"--{name} {value} and --{today} {own[today]} both given; keep one (they set the same thing)")
    own[today] = value


def _sampling(own: dict, legacy: dict, notes: list[Note]) -> None:
    if legacy.get("group_by_length") or legacy.get("group_by_varlen"):
        own["train_sampling_strategy"] = "group_by_length"
    if legacy.get("early_mix_text") and as_bool(
        own.get("group_by_modality_length", False), "--group_by_modality_length"
    ):
        own["group_by_modality_length"] = False
        own["train_sampling_strategy"] = "group_by_length"
        notes.append(
            (
                logging.INFO,
                "--early_mix_text: text-only samples share batches with the others; batches are grouped by length only",
            )
        )
