"""The training's arguments: one class per group of settings, each setting defined once (its field, its
default, its help), and the one way a command line becomes them.

`parse_args(argv)`: the `--config` recipe with the command line's flags laid over it (recipe.py), LLaVA's
legacy flags translated (legacy_flags.py), the machine-dependent settings decided (machine_settings.py),
then transformers' argument parser types the result into the classes below once. What a setting means
for a given model (the frames its packer takes, the sequence budget its positions allow, the prompt
options its checkpoint records) is resolved by the pipeline (train.py) into values of its own; the
parsed arguments are not changed after parsing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field, fields, make_dataclass

import transformers
from transformers import HfArgumentParser

from ..data.prompts import PromptSettings
from ..errors import InputError, OneLineArgumentErrors, UsageError
from ..modeling.vision_settings import VisionSettings
from . import command_line, legacy_flags, machine_settings, recipe
from .tunable_parts import DEFAULT_PARTS, TUNABLE_PARTS, parse_tunable_parts

logger = logging.getLogger("llava.train")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "Language model folder or hub id (GPT-2/BAMBI, Llama, ...), or a llava checkpoint."}
    )
    version: str | None = field(
        default=None,
        metadata={
            "help": "Prompt template: 'plain' for caption LMs such as GPT-2, 'chat' for chat families, or LLaVA's names (v1, qwen_1_5, ...). Default: the checkpoint's (config.conv_template), else plain. Recorded in the model config."
        },
    )
    mm_tunable_parts: str = field(
        default=DEFAULT_PARTS,
        metadata={
            "help": f"Comma-separated parts to train, of: {', '.join(TUNABLE_PARTS)}. mm_mlp_adapter without mm_vision_resampler also trains an untrained packer."
        },
    )
    coordinate_tokens: bool = field(
        default=False,
        metadata={
            "help": "Give the model LLaVA-ST's coordinate tokens (100 bins per axis for time, height and width; <TEMP-INPUT> and friends in samples, <TEMP-042> in answers), the stage 2 of LLaVA-ST (--stage 2 sets it). A checkpoint that has them keeps them."
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "sdpa (the default, where the family has it: all but MPT) or eager; flash_attention_2 where its package and a GPU are there (else sdpa, with a warning)."
        },
    )
    model_class_name: str | None = field(
        default=None,
        metadata={
            "help": "LLaVA-NeXT's class choice (e.g. LlavaQwenForCausalLM): checked against the family that config.json names."
        },
    )


@dataclass
class DataArguments:
    data_path: str | None = field(
        default=None,
        metadata={
            "help": "LLaVA JSON list or JSONL file of samples; several files joined by commas, /dir/{a,b}.json, or a LLaVA-NeXT YAML mixture."
        },
    )
    video_folder: str | None = field(
        default=None, metadata={"help": "Folder that the samples' 'video' paths are relative to."}
    )
    image_folder: str | None = field(
        default=None, metadata={"help": "Folder that the samples' 'image' paths are relative to."}
    )
    feature_cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder written by `python -m llava.train.cache_features`: cached clips skip decoding and the tower; the rest are computed online."
        },
    )
    max_skip_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Abort when more than this share of the samples is skipped as unreadable (0.05: one sample in twenty)."
        },
    )


@dataclass
class LoraArguments:
    """LoRA as LLaVA trains it (llava/model/lora.py), with LLaVA-ST's stacked adapters."""

    lora_enable: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters on the language model's linear layers: the adapters train and the language model's own weights stay frozen, whatever --mm_tunable_parts says of mm_language_model; its visual parts train as it says. Saved as LLaVA saves it (adapter_model.safetensors, adapter_config.json, non_lora_trainables.bin, config.json): load_pretrained_model(OUTPUT_DIR, model_base=the --model_name_or_path) merges it; python -m llava.model.merge_lora writes it as a plain checkpoint."
        },
    )
    lora_r: int = field(default=64, metadata={"help": "Rank of the LoRA adapters."})
    lora_alpha: int = field(
        default=16, metadata={"help": "LoRA's scale: an adapter's update is multiplied by lora_alpha / lora_r."}
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA adapters' input."})
    lora_bias: str = field(
        default="none",
        metadata={
            "help": "Biases that train with the adapters: none, all (every bias of the language model) or lora_only (those of the adapted layers)."
        },
    )
    load_lora_path: str | None = field(
        default=None,
        metadata={
            "help": "LLaVA-ST's stacked adapters: the output folder of an earlier --lora_enable run, merged into the model (its non-LoRA weights loaded, its adapter merged) before training; with --lora_enable a new adapter trains on top, and the run's config.json records the folders merged under it (lora_merged_adapters), which loading merges first."
        },
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    model_max_length: int | None = field(
        default=None,
        metadata={"help": "Longest sequence (visual + text); at most the LM's positions, which is the default."},
    )
    mm_projector_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the resampler, projector and embeddings (default: --learning_rate)."},
    )
    mm_vision_tower_lr: float | None = field(
        default=None, metadata={"help": "Learning rate of the vision tower where it trains (default: --learning_rate)."}
    )
    group_by_modality_length: bool = field(
        default=False,
        metadata={"help": "Batches of one modality (with media / text only) and similar lengths, as LLaVA's."},
    )
    babylm_word_milestones: bool = field(
        default=False,
        metadata={
            "help": "Save a model at every 1M words up to 10M, 10M up to 100M, 100M up to 1B (answer words trained, all ranks)."
        },
    )
    word_milestones: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated word counts at which to save a model (besides or instead of the BabyLM ones)."
        },
    )
    max_words: int | None = field(
        default=None, metadata={"help": "Stop once this many answer words have been trained."}
    )
    eval_milestones: str | None = field(
        default=None,
        metadata={
            "help": "The arguments of `python -m llava.eval.curves` (after OUTPUT_DIR), e.g. '--minimal-pairs pairs/ --captions val.json --video-folder clips'; each milestone checkpoint (and the final model) is then evaluated in the background as soon as it is saved (output in OUTPUT_DIR/curves.log)."
        },
    )
    save_every_minutes: float | None = field(
        default=30.0,
        metadata={
            "help": "Besides --save_steps, save a checkpoint whenever this many minutes have passed since the last one (0: only --save_steps; none with --save_strategy no)."
        },
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: batches carry clips."})
    dataloader_persistent_workers: bool = field(
        default=True,
        metadata={
            "help": "Keep the DataLoader workers from one epoch to the next (with the feature cache files they opened), instead of starting them anew every epoch; without workers (--dataloader_num_workers 0) there is nothing to keep."
        },
    )

    def __post_init__(self):
        # torch refuses persistent workers where there are none.
        if self.dataloader_num_workers == 0:
            self.dataloader_persistent_workers = False
        # A frozen language model gives checkpointed blocks inputs that need no grad; reentrant
        # checkpointing would then give the adapter none. Non-reentrant is this trainer's default.
        if self.activation_checkpointing and self.activation_checkpointing_kwargs is None:
            self.activation_checkpointing_kwargs = {"use_reentrant": False}
        super().__post_init__()


@dataclass
class RunArguments:
    """A run's parsed arguments, by group."""

    model: ModelArguments
    vision: VisionSettings
    prompt: PromptSettings
    data: DataArguments
    lora: LoraArguments
    training: TrainingArguments


OWN_CLASSES = (ModelArguments, VisionSettings, PromptSettings, DataArguments, LoraArguments, TrainingArguments)
OWN_FIELDS = {f.name: f for cls in OWN_CLASSES for f in fields(cls)}
# LLaVA's legacy flags, for --help (with LLaVA's defaults): the settings reach the parser translated, with
# none of them left.
# transformers still has fields of two of them (gradient_checkpointing*): its own help lists those.
LegacyFlagArguments = make_dataclass(
    "LegacyFlagArguments",
    [
        (name, str | None, field(default=flag.default, metadata={"help": f"LLaVA flag, {legacy_flags.describe(name)}"}))
        for name, flag in legacy_flags.LEGACY_FLAGS.items()
        if name not in OWN_FIELDS
    ],
)
ARGUMENT_CLASSES = (*OWN_CLASSES, LegacyFlagArguments)
FIELDS = {f.name: f for cls in ARGUMENT_CLASSES for f in fields(cls)}

PROG = "python -m llava.train.train"
DESCRIPTION = (
    "Trains a llava model. --config RECIPE.yaml reads the run's settings from a recipe file (e.g. "
    "recipes/italian_video.yaml: flag names and values); flags given here win over the recipe's, and "
    "--FLAG none removes a recipe's value of a flag that is unset by default (--deepspeed none)."
)


class ArgumentParser(OneLineArgumentErrors, HfArgumentParser):
    pass


@dataclass
class Settings:
    """A command line's settings ready for an argument parser: recipe, flags, legacy flags translated,
    the machine-dependent ones decided; and what to log about them."""

    values: dict[str, object]
    stray: list[str]
    notes: list[legacy_flags.Note]
    verbose: bool
    refusal: legacy_flags.FlagError | None  # a legacy flag this trainer cannot honour

    def tokens(self) -> list[str]:
        return command_line.tokens(self.values, self.stray)


def settings_of(argv: list[str]) -> Settings:
    """The settings a training command line gives (the recipe and flags are checked against the training's
    argument classes). cache_features parses the same settings with its own classes."""
    layered = recipe.settings_of(argv, FIELDS)
    translated = legacy_flags.translate(layered.values)
    values, notes = machine_settings.for_this_machine(translated.settings)
    notes += _overruled(values)
    return Settings(values, layered.stray, translated.notes + notes, translated.verbose, translated.refusal)


def _overruled(values: dict) -> list[legacy_flags.Note]:
    """transformers' settings this trainer does otherwise, dropped with a warning (from `values`)."""
    notes = []
    if legacy_flags.as_bool(values.pop("enable_jit_checkpoint", False), "--enable_jit_checkpoint"):
        # Its SIGTERM handler would replace ours, and it saves per rank, not at a step all ranks agree on.
        notes.append(
            (
                logging.WARNING,
                "--enable_jit_checkpoint is not used: a signal saves a checkpoint anyway, at a step all ranks agree on",
            )
        )
    return notes


def parse_args(argv: list[str] | None = None, log: bool = True, start_deepspeed: bool = True) -> RunArguments:
    """Parses a command line (ours, or LLaVA's / LLaVA-NeXT's: see legacy_flags); with `log`, sets up
    logging and logs what the legacy flags do here. `start_deepspeed=False` leaves --deepspeed out (its
    config file is still checked): the preflight checks must not start it. Raises UsageError (FlagError
    for a flag this trainer cannot honour) with one line."""
    settings = settings_of(list(sys.argv[1:] if argv is None else argv))
    # transformers reads the --deepspeed file while parsing, and fails without naming it.
    check_deepspeed_config(settings.values.get("deepspeed"))
    if not start_deepspeed:
        settings.values.pop("deepspeed", None)
    parser = ArgumentParser(ARGUMENT_CLASSES, prog=PROG, description=DESCRIPTION)
    try:
        *parsed, _, unknown = parser.parse_args_into_dataclasses(args=settings.tokens(), return_remaining_strings=True)
    except UsageError:
        raise
    except ValueError as e:  # the arguments' own checks (TrainingArguments.__post_init__): flags that conflict
        raise UsageError(" ".join(str(e).split())) from e
    if unknown:
        raise parser.unknown_arguments(unknown)
    args = RunArguments(*parsed)
    check(args)  # this trainer's own settings first (a LLaVA script's --image_aspect_ratio anyres_max_9)
    if settings.refusal is not None:
        raise settings.refusal
    if log:
        setup_logging(args.training)
        if args.training.process_index == 0:
            for level, message in settings.notes:
                logger.log(level, "%s", message)
            if settings.verbose:
                for name, group in vars(args).items():
                    logger.info("%s arguments: %s", name, vars(group))
    return args


def check(args: RunArguments) -> None:
    """The checks of this trainer's own settings that LLaVA scripts may set to values it cannot honour."""
    from ..data.templates import get_template
    from ..mm_utils import image_aspect_ratio

    if args.model.version:
        try:
            get_template(args.model.version)
        except ValueError as e:
            raise legacy_flags.FlagError(str(e)) from None
    if args.prompt.image_aspect_ratio is not None:
        try:
            image_aspect_ratio(args.prompt)
        except ValueError as e:
            raise legacy_flags.FlagError(f"--{e}") from None
    resampler = args.vision.mm_resampler_type
    if resampler not in (None, "", "none", "fast_slow_token_packer"):
        raise legacy_flags.FlagError(
            f"--mm_resampler_type {resampler} is not available: the fast/slow TokenPacker (fast_slow_token_packer, "
            "the default) reduces the visual tokens here, sized by --mm_fast_grid/--mm_slow_grid; or none for every patch"
        )
    parse_tunable_parts(args.model.mm_tunable_parts)
    check_lora(args.lora)


def check_lora(lora: LoraArguments) -> None:
    from ..model.lora import BIASES

    if lora.lora_bias not in BIASES:
        raise UsageError(f"--lora_bias {lora.lora_bias}: choose one of {', '.join(BIASES)}")
    if lora.lora_r < 1 or lora.lora_alpha <= 0:
        raise UsageError(f"--lora_r {lora.lora_r} and --lora_alpha {lora.lora_alpha} must be positive")
    if not 0 <= lora.lora_dropout < 1:
        raise UsageError(f"--lora_dropout {lora.lora_dropout} must be at least 0 and below 1")


def check_deepspeed_config(config) -> None:
    """--deepspeed names a readable JSON file (or is inline JSON, as transformers allows)."""
    if not config or not isinstance(config, str) or config.lstrip().startswith("{"):
        return
    if not os.path.isfile(config):
        raise InputError(f"--deepspeed config file does not exist ({config})")
    with open(config, encoding="utf-8") as f:
        text = f.read()
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"--deepspeed config is not valid JSON: {e.msg[0].lower() + e.msg[1:]} ({config}:{e.lineno}:{e.colno})"
        ) from None
    if not isinstance(settings, dict):
        raise InputError(
            f"--deepspeed config holds a JSON {type(settings).__name__}, not an object of settings ({config})"
        )


def setup_logging(training_args) -> None:
    level = (
        logging.INFO if training_args.local_process_index == 0 and training_args.process_index == 0 else logging.WARNING
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, force=True)
    transformers.utils.logging.set_verbosity(level if level == logging.WARNING else logging.WARNING)
