"""Training entry point: `python -m llava.train.train ARGS`, or LLaVA's `llava/train/train_mem.py ARGS`
(also under torchrun and DeepSpeed).

Arguments keep LLaVA's names, and LLaVA's and LLaVA-NeXT's published command lines run: every flag they
pass is decided in llava_flags.py (honoured, aliased, ignored with a warning, or refused with one line
naming the alternative). The language-model family comes from the checkpoint's config.json. A run
started from a plain language model plus `--vision_tower` builds the visual modules; a run started from
a saved llava checkpoint keeps the ones its config describes. Started again with the same command, a run
resumes from the newest complete checkpoint in --output_dir.

Before anything is loaded, preflight.py checks the paths, the model folder and every data file (all
their problems in one line). An expected failure ends the process with one line, `error: WHAT (WHERE)`,
and status 1 (2 for a wrong flag); LLAVA_DEBUG=1 shows its traceback. A run that got as far as training
ends its log with one summary line (run_summary.py).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import transformers
from torch.distributed.elastic.multiprocessing.errors import record
from transformers import AutoTokenizer, HfArgumentParser, set_seed
from transformers.trainer_callback import ProgressCallback

from .. import errors
from ..constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
from ..conversation import trained_version
from ..errors import OneLineArgumentErrors, UsageError
from ..model.builder import family_of, from_pretrained
from ..model.load_options import attention_request
from ..modeling.llava_arch import max_positions
from ..modeling.vision_settings import VisionSettings
from . import checkpoints, llava_flags, preemption, preflight, recipe
from .callbacks import LossProgressBar
from .data import (
    DataArguments,
    DataCollatorForSupervisedDataset,
    LazySupervisedDataset,
    SkipLimitExceeded,
    SkipTracker,
    ensure_pad_token,
)
from .feature_cache import FeatureCache
from .llava_flags import TUNABLE_PARTS, FlagError, LlavaFlagArguments
from .milestone_eval import BackgroundEvaluators
from .milestones import WordMilestoneCallback, parse_milestones, read_word_count
from .run_summary import summary_line
from .trainer import LlavaTrainer

logger = logging.getLogger("llava.train")


# The vision settings' defaults are VisionSettings' (a dataclass's class attributes hold its fields' defaults).
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
    vision_tower: str | None = field(
        default=VisionSettings.vision_tower,
        metadata={"help": "Vision tower folder or hub id (e.g. facebook/dinov2-large). Omit for text-only training."},
    )
    mm_vision_select_layer: int = field(
        default=VisionSettings.mm_vision_select_layer,
        metadata={"help": "Hidden layer of the tower whose patch tokens are used."},
    )
    mm_projector_type: str = field(
        default=VisionSettings.mm_projector_type, metadata={"help": "linear, identity or mlpNx_gelu."}
    )
    mm_projector_hidden_size: int | None = field(
        default=VisionSettings.mm_projector_hidden_size,
        metadata={"help": "Hidden width of the MLP projector (seed: 2560); default the LM's width."},
    )
    mm_resampler_type: str | None = field(
        default=VisionSettings.mm_resampler_type, metadata={"help": "fast_slow_token_packer, or none for every patch."}
    )
    mm_fast_grid: list[int] = field(
        default_factory=lambda: list(VisionSettings.mm_fast_grid),
        metadata={"help": "Fast track output grid: frames rows columns."},
    )
    mm_slow_grid: list[int] = field(
        default_factory=lambda: list(VisionSettings.mm_slow_grid),
        metadata={"help": "Slow track output grid: frames rows columns."},
    )
    mm_packer_num_heads: int = field(
        default=VisionSettings.mm_packer_num_heads, metadata={"help": "Attention heads of each packer track."}
    )
    mm_tunable_parts: str = field(
        default="mm_vision_resampler,mm_mlp_adapter,mm_language_model",
        metadata={"help": f"Comma-separated parts to train, of: {', '.join(TUNABLE_PARTS)}."},
    )
    pretrain_mm_mlp_adapter: str | None = field(
        default=VisionSettings.pretrain_mm_mlp_adapter,
        metadata={"help": "mm_projector.bin of an adapter-only run to start from."},
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
    mm_use_im_start_end: bool = field(
        default=False,
        metadata={
            "help": "Wrap the visual block in <im_start>/<im_end> tokens (added to the tokenizer); recorded in the config."
        },
    )
    mm_use_im_patch_token: bool = field(
        default=False,
        metadata={
            "help": "Add LLaVA's <im_patch> token to the tokenizer (LLaVA never writes it in prompts); recorded in the config."
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


PROG = "python -m llava.train.train"
DESCRIPTION = (
    "Trains a llava model. --config RECIPE.yaml reads the run's settings from a recipe file (e.g. "
    "recipes/italian_video.yaml: flag names and values); flags given here win over the recipe's, and "
    "--FLAG none removes a recipe's value of a flag that is unset by default (--deepspeed none)."
)


class ArgumentParser(OneLineArgumentErrors, HfArgumentParser):
    pass


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments, LlavaFlagArguments)


def with_recipe(argv: list[str]) -> list[str]:
    """The command line with its `--config RECIPE` replaced by the recipe's flags (see recipe.py)."""
    return recipe.expand(argv, ARGUMENT_CLASSES)


def parse_args(argv: list[str] | None = None, log: bool = True):
    """Parses a command line (ours, or LLaVA's / LLaVA-NeXT's: see llava_flags); with `log`, sets up
    logging and logs what the LLaVA flags do here. Raises UsageError (FlagError for a flag this trainer
    cannot honour) with one line."""
    argv = with_recipe(list(sys.argv[1:] if argv is None else argv))
    argv, notes, given = llava_flags.rewrite_argv(argv)
    # transformers reads the --deepspeed file while parsing, and fails without naming it.
    preflight.check_deepspeed_config(preflight.without_deepspeed(argv)[1])
    # Without CUDA the Trainer would believe it has one GPU (and DeepSpeed's batch checks fail): make the
    # CPU explicit, so the same command line runs on a laptop and on a cluster.
    if not torch.cuda.is_available() and "use_cpu" not in given and "no_cuda" not in given:
        argv += ["--use_cpu", "True"]
    parser = ArgumentParser(ARGUMENT_CLASSES, prog=PROG, description=DESCRIPTION)
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except UsageError:
        raise
    except ValueError as e:  # the arguments' own checks (TrainingArguments.__post_init__): flags that conflict
        raise UsageError(" ".join(str(e).split())) from e
    if unknown:
        raise parser.unknown_arguments(unknown)
    model_args, data_args, training_args, flags = parsed
    if log:
        _setup_logging(training_args)
    notes += llava_flags.resolve(model_args, data_args, training_args, flags, given)
    if log and training_args.process_index == 0:
        for level, message in notes:
            logger.log(level, "%s", message)
    return model_args, data_args, training_args


def _setup_logging(training_args) -> None:
    level = (
        logging.INFO if training_args.local_process_index == 0 and training_args.process_index == 0 else logging.WARNING
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, force=True)
    transformers.utils.logging.set_verbosity(level if level == logging.WARNING else logging.WARNING)


def build_model(model_args, data_args, training_args):
    family = family_of(model_args.model_name_or_path, "--model_name_or_path")
    llava_flags.check_model_class_name(model_args.model_class_name, family)
    model = from_pretrained(family, model_args.model_name_or_path, attention_request(model_args.attn_implementation))
    model.config.use_cache = False

    positions = max_positions(model.config)
    if training_args.model_max_length is None:
        training_args.model_max_length = positions
    elif positions is not None and training_args.model_max_length > positions:
        # LLaVA's scripts pass 2048-32768 whatever the model: the language model's positions bound it.
        logger.warning(
            "--model_max_length %d is more than the language model's %d positions (%s): using %d",
            training_args.model_max_length,
            positions,
            model_args.model_name_or_path,
            positions,
        )
        training_args.model_max_length = positions

    fresh_adapter = False
    if model_args.vision_tower or model.get_vision_tower() is not None:
        settings = VisionSettings.from_args(model_args, data_args)  # the frame count is a data flag
        fresh_adapter = bool(model.get_model().initialize_vision_modules(settings))
        record_prompt_settings(model, model_args, data_args)
    model.config.conv_template = model_args.version = model_args.version or trained_version(model.config)
    apply_tunable_parts(model, model_args.mm_tunable_parts, fresh_adapter=fresh_adapter)
    # --gradient_checkpointing is transformers' older name of --activation_checkpointing; both arrive here.
    if training_args.activation_checkpointing:
        if training_args.activation_checkpointing_kwargs is None:
            training_args.activation_checkpointing_kwargs = {"use_reentrant": False}
        # A frozen LM gives checkpointed blocks inputs that need no grad; with reentrant checkpointing
        # the adapter would then get none. Requiring grad on the embeddings' output avoids that.
        model.enable_input_require_grads()
    return family, model


def record_prompt_settings(model, model_args, data_args) -> None:
    """LLaVA's prompt settings, recorded in the config so that inference writes prompts the way this
    run trains on them: `image_aspect_ratio` (process_images reads it), `add_time_instruction`,
    `mm_use_im_start_end` and `mm_use_im_patch_token`. A checkpoint's own settings stay where the flags do not set them."""
    config = model.config
    data_args.image_aspect_ratio = (
        data_args.image_aspect_ratio or getattr(config, "image_aspect_ratio", None) or "square"
    )
    config.image_aspect_ratio = data_args.image_aspect_ratio
    # LLaVA-NeXT's --add_time_instruction: inference writes the clip's timing into its prompts too.
    data_args.add_time_instruction = bool(
        data_args.add_time_instruction or getattr(config, "add_time_instruction", False)
    )
    config.add_time_instruction = data_args.add_time_instruction
    for name in ("mm_use_im_start_end", "mm_use_im_patch_token"):
        if getattr(config, name, False) and not getattr(model_args, name):
            logger.info("%s stays on: the checkpoint was trained with it", name)
        setattr(model_args, name, bool(getattr(model_args, name) or getattr(config, name, False)))
        setattr(config, name, getattr(model_args, name))
    max_frames = config.mm_num_frames  # the visual modules are built (called only then), so it is recorded
    if data_args.num_frames > max_frames:
        logger.warning(
            "clips are read at %d frames, not %d: this model's packer is built for %d (mm_num_frames)",
            max_frames,
            data_args.num_frames,
            max_frames,
        )
        data_args.num_frames = max_frames


def add_visual_tokens(model, tokenizer, model_args) -> None:
    """LLaVA's tokens for `--mm_use_im_patch_token` (<im_patch>) and `--mm_use_im_start_end`
    (<im_start>, <im_end>): added to the tokenizer as special tokens, and the embeddings resized where the
    vocabulary has no spare rows (transformers' mean resizing: new rows drawn around the others' mean;
    tied heads stay tied)."""
    tokens = []
    if model_args.mm_use_im_patch_token:
        tokens.append(DEFAULT_IMAGE_PATCH_TOKEN)
    if model_args.mm_use_im_start_end:
        tokens += [DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
    if not tokens:
        return
    added = tokenizer.add_tokens(tokens, special_tokens=True)
    if not added:  # a checkpoint trained with them has them
        return
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    logger.info("added %s to the tokenizer (%d tokens now)", ", ".join(tokens), len(tokenizer))
    if not any(p.requires_grad for p in model.get_input_embeddings().parameters()):
        logger.warning(
            "the embeddings of %s do not train in this run (the language model is frozen): they keep their "
            "initial values; add mm_language_model to --mm_tunable_parts to learn them",
            ", ".join(tokens),
        )


def apply_tunable_parts(model, parts: str, fresh_adapter: bool = False) -> None:
    """Sets what trains. The adapter is the packer (mm_vision_resampler) with the projector and the
    embeddings (mm_mlp_adapter). Where the adapter starts untrained (`fresh_adapter`: built in this run,
    not loaded) and only part of it is chosen, the rest of it trains too: a random frozen packer or
    projector would make the trained part learn around noise."""
    chosen = llava_flags.parse_tunable_parts(parts)
    model.requires_grad_("mm_language_model" in chosen)
    inner = model.get_model()
    if inner.get_vision_tower() is not None:
        adapter = {"mm_vision_resampler", "mm_mlp_adapter"}
        if fresh_adapter and chosen & adapter and not adapter <= chosen:
            missing = sorted(adapter - chosen)
            logger.info(
                "the adapter starts untrained in this run: %s trains too (packer, projector and embeddings train together)",
                ", ".join(missing),
            )
            chosen |= adapter
        elif fresh_adapter and not chosen & adapter:
            logger.warning(
                "the packer and the projector start untrained and do not train (--mm_tunable_parts %s)", parts
            )
        inner.vision_tower.requires_grad_("mm_vision_tower" in chosen)
        inner.vision_resampler.requires_grad_("mm_vision_resampler" in chosen)
        inner.mm_projector.requires_grad_("mm_mlp_adapter" in chosen)
        inner.mm_pos_embed.requires_grad_("mm_mlp_adapter" in chosen)
    if not any(p.requires_grad for p in model.parameters()):
        raise FlagError(f"--mm_tunable_parts {parts!r} leaves nothing to train in this model")


def _numel(param) -> int:
    return getattr(param, "ds_numel", None) or param.numel()  # ZeRO-3 partitions leave numel() at 0


def _count(module) -> tuple[int, int]:
    trainable = sum(_numel(p) for p in module.parameters() if p.requires_grad)
    return trainable, sum(_numel(p) for p in module.parameters()) - trainable


def describe(family, model, model_args, data_args, training_args) -> None:
    """Logs what was built: the numbers a researcher checks before a long run."""
    inner = model.get_model()
    positions = max_positions(model.config)
    lines = [f"family {family} ({type(model).__name__}) from {model_args.model_name_or_path}"]
    parts = {}
    tower = inner.get_vision_tower()
    if tower is not None:
        cfg = model.config
        video, image = inner.num_visual_tokens(cfg.mm_num_frames), inner.num_visual_tokens(1)
        lines.append(
            f"vision tower {cfg.mm_vision_tower} ({tower.config.model_type}, width {tower.hidden_size}, "
            f"{tower.image_size}px -> {tower.grid_size}x{tower.grid_size} patches, layer {cfg.mm_vision_select_layer})"
        )
        if cfg.mm_resampler_type == "fast_slow_token_packer":
            fast, slow = (inner.vision_resampler.fast.grid, inner.vision_resampler.slow.grid)
            lines.append(
                f"packer fast {'x'.join(map(str, fast))} + slow {'x'.join(map(str, slow))}: "
                f"{video} tokens per {cfg.mm_num_frames}-frame clip, {image} per image"
            )
        else:
            lines.append(f"no resampler: {video} tokens per clip, {image} per image")
        linears = [m for m in inner.mm_projector.modules() if isinstance(m, torch.nn.Linear)]
        shape = (
            " -> ".join([str(linears[0].in_features)] + [str(m.out_features) for m in linears])
            if linears
            else "identity"
        )
        lines.append(f"projector {cfg.mm_projector_type}: {shape}")
        parts = {
            "vision tower": inner.vision_tower,
            "resampler": inner.vision_resampler,
            "projector": inner.mm_projector,
            "embeddings": inner.mm_pos_embed,
        }
        budget = training_args.model_max_length - video
        lines.append(
            f"sequence budget: {video} visual + up to {budget} text = {training_args.model_max_length} "
            f"(language model positions: {positions})"
        )
    else:
        lines.append(f"text only; sequence budget {training_args.model_max_length} (positions: {positions})")
    per_device, accumulation, world = (
        training_args.per_device_train_batch_size,
        training_args.gradient_accumulation_steps,
        training_args.world_size,
    )
    lines.append(
        f"batch {per_device} per device x {accumulation} accumulation x {world} processes = "
        f"{per_device * accumulation * world} samples per optimizer step"
    )
    visual_ids = {id(p) for m in parts.values() for p in m.parameters()}
    lm_trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad and id(p) not in visual_ids)
    lm_total = sum(_numel(p) for p in model.parameters() if id(p) not in visual_ids)
    counts = {name: _count(m) for name, m in parts.items()}
    counts["language model"] = (lm_trainable, lm_total - lm_trainable)
    for name, (trainable, frozen) in counts.items():
        lines.append(f"  {name:<15} trainable {trainable:>12,}  frozen {frozen:>12,}")
    logger.info("built:\n  %s", "\n  ".join(lines))


def build_data(model_args, data_args, training_args, tokenizer, model, samples: list[dict] | None = None):
    """The data set, its collator and its skip tracker. `samples`: the validated samples of --data_path
    (preflight.check's), read here where not given."""
    if not data_args.data_path:
        raise UsageError("--data_path is required: the JSON list or JSONL file of training samples")
    ensure_pad_token(tokenizer, model)
    tower = model.get_vision_tower()
    cache = None
    if data_args.feature_cache:
        if tower is None:
            raise UsageError(
                f"--feature_cache needs a model with a vision tower: give --vision_tower ({data_args.feature_cache})"
            )
        cache = FeatureCache(data_args.feature_cache, tower)
    add_visual_tokens(model, tokenizer, model_args)
    visual_tokens = None
    if tower is not None:
        inner, max_frames = model.get_model(), model.config.mm_num_frames
        # A longer clip reaches the model sampled down to its frame count: count the tokens it gets.
        visual_tokens = lambda frames: inner.num_visual_tokens(min(frames, max_frames))  # noqa: E731
    dataset = LazySupervisedDataset(
        data_args.data_path,
        tokenizer,
        data_args,
        image_processor=tower.image_processor if tower is not None else None,
        template=model_args.version,
        model_max_length=training_args.model_max_length,
        visual_tokens_per_input=visual_tokens,
        feature_cache=cache,
        im_start_end=bool(model_args.mm_use_im_start_end) and tower is not None,
        seed=training_args.seed,
        samples=samples,
    )
    skips = SkipTracker(
        training_args.output_dir, len(dataset), data_args.max_skip_fraction, rank=training_args.process_index
    )
    return dataset, DataCollatorForSupervisedDataset(tokenizer), skips


def build_trainer(
    argv: list[str] | None = None, stop: preemption.StopSignals | None = None
) -> tuple[LlavaTrainer, str | None]:
    """Everything a run needs, from its command line: the trainer, and the checkpoint to resume from.
    `stop` (active StopSignals) makes the run save and stop on SIGTERM, SIGINT and SIGUSR1."""
    model_args, data_args, training_args = parse_args(argv)
    # Paths, data files and the model folder, checked before anything is loaded (and before DeepSpeed
    # starts): every rank finds the same problems, and the samples read here are the data set's.
    checked = preflight.check(model_args, data_args, training_args)
    if training_args.enable_jit_checkpoint:
        # Its SIGTERM handler would replace ours, and it saves per rank, not at a step all ranks agree on.
        logger.warning(
            "--enable_jit_checkpoint is not used: a signal saves a checkpoint anyway, at a step all ranks agree on"
        )
        training_args.enable_jit_checkpoint = False
    set_seed(training_args.seed)
    if training_args.deepspeed:
        # ZeRO-3 partitions weights while from_pretrained builds the model; DeepSpeed must know the
        # world size by then, or its batch-size check fails.
        import deepspeed

        deepspeed.init_distributed(dist_backend=None)
    family, model = build_model(model_args, data_args, training_args)

    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, model_max_length=training_args.model_max_length
    )
    train_dataset, collator, skip_tracker = build_data(
        model_args, data_args, training_args, tokenizer, model, checked.samples
    )
    describe(family, model, model_args, data_args, training_args)

    resume = None
    if training_args.process_index == 0:
        checkpoints.remove_incomplete_checkpoints(training_args.output_dir)
    with training_args.main_process_first():
        resume = checkpoints.newest_complete_checkpoint(training_args.output_dir)
    if resume:
        logger.info("resuming from %s", resume)

    milestones = parse_milestones(training_args.babylm_word_milestones, training_args.word_milestones)
    counting = bool(milestones) or training_args.max_words is not None
    evaluators = (
        BackgroundEvaluators(training_args.output_dir, training_args.eval_milestones)
        if training_args.eval_milestones
        else None
    )
    trainer = LlavaTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        skip_tracker=skip_tracker,
        counting_words=counting,
        evaluators=evaluators,
    )
    if counting:
        trainer.add_callback(WordMilestoneCallback(trainer, milestones, training_args.max_words))
        if resume:
            trainer.words_seen = read_word_count(resume)
    trainer.remove_callback(ProgressCallback)  # replaced by a bar that shows loss and samples/s
    trainer.add_callback(LossProgressBar())
    trainer.add_callback(preemption.StopAndIntervalCheckpoints(stop, training_args.save_every_minutes))
    return trainer, resume


def train_and_save(trainer: LlavaTrainer, resume: str | None = None) -> LlavaTrainer:
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    trainer.save_final_model()
    if trainer.args.should_save:
        count = trainer.skip_tracker.count if trainer.skip_tracker is not None else 0
        logger.info("final model saved to %s (%d clips skipped)", trainer.args.output_dir, count)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return trainer


class Run:
    """One training run as cli() sees it: the trainer, once built (before that, a failure is the same on
    every rank and there is no run to summarize)."""

    def __init__(self):
        self.trainer: LlavaTrainer | None = None


def main(argv: list[str] | None = None, run: Run | None = None) -> LlavaTrainer:
    """Trains as `argv` says, and logs the run's summary as its last line. Told to stop by a signal, it
    saves a checkpoint after the current step and raises preemption.TrainingInterrupted. `run` is told
    the trainer as soon as it exists."""
    run = run if run is not None else Run()
    with preemption.StopSignals() as stop:
        trainer, resume = build_trainer(argv, stop)
        run.trainer = trainer
        train_and_save(trainer, resume)
    log_summary(trainer)
    return trainer


def log_summary(trainer: LlavaTrainer, outcome: BaseException | None = None) -> None:
    if trainer.is_world_process_zero():
        logger.info("%s", summary_line(trainer, outcome))


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


# How long a rank other than 0 waits, after a failure that every rank should share, for rank 0 to say it
# and end the job (the launcher then stops this rank) before it says it itself.
RANK_ZERO_GRACE_S = 30.0


def _report_failure(exc: BaseException, run: Run) -> int:
    """Says why the run ended (the `error:` line, then the summary) and returns the exit status; a bug
    (or anything, with LLAVA_DEBUG=1) is re-raised after the summary, to end in its traceback.

    Who speaks: a failure before the trainer exists (flags, paths, data, the model folder) and the skip
    limit (decided on every rank together) are the same on every rank, so rank 0 says it. The other
    ranks wait: an early exit of theirs would make the launcher stop rank 0 before it has spoken. Where
    rank 0 does not end the job within RANK_ZERO_GRACE_S (it did not fail: a file missing on one node
    only), the rank says it itself, as `rank N: ...`. A failure during training is one rank's own: that
    rank prints it, as `rank N: ...` where there are several."""
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    if isinstance(exc, preemption.TrainingInterrupted):  # saved, and said so (rank 0, one line)
        log_summary(run.trainer, exc)
        return preemption.EXIT_INTERRUPTED
    expected = errors.one_line(exc) is not None or isinstance(exc, KeyboardInterrupt)
    if not expected or errors.debugging():
        if run.trainer is not None:
            log_summary(run.trainer, exc)
        raise exc
    same_everywhere = run.trainer is None or isinstance(exc, SkipLimitExceeded)
    if same_everywhere and rank != 0 and not isinstance(exc, KeyboardInterrupt):
        time.sleep(RANK_ZERO_GRACE_S)
    prefix = f"rank {rank}: " if world > 1 and (rank != 0 or not same_everywhere) else ""
    if isinstance(exc, KeyboardInterrupt):
        errors.say_error(f"{prefix}interrupted")
    else:
        errors.report(exc, prefix)
    if run.trainer is not None:
        log_summary(run.trainer, exc)
    return 130 if isinstance(exc, KeyboardInterrupt) else errors.exit_code(exc)


# `record`: under torchrun, an exception that ends a rank is written where the launcher reads it, and its
# summary names the rank and the exception (the first failure, as the root cause). Only bugs reach it:
# an expected failure ends in its one line and status.
@record
def cli() -> None:
    run = Run()
    distributed = False
    status = 0
    try:
        main(run=run)
        distributed = dist.is_available() and dist.is_initialized()
    except (Exception, KeyboardInterrupt) as e:
        distributed = dist.is_available() and dist.is_initialized()
        status = _report_failure(e, run)  # (a bug is raised again, and ends in its traceback)
    finally:
        # Ending every rank together avoids most of the aborts at exit seen with ZeRO-3 on the CPU.
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if distributed:
        # Even so, a rank sometimes aborts while the interpreter tears down DeepSpeed's and gloo's native
        # threads ("terminate called without an active exception"), after everything is saved or said, and
        # the launcher then reports a finished run as failed, or adds a SIGABRT line to a failure that was
        # already said (seen after the skip limit). Past this point there is nothing left to do: flush and
        # leave without the teardown.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    cli()
