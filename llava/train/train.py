"""Training entry point: `python -m llava.train.train ARGS` (also under torchrun and DeepSpeed).

Arguments keep LLaVA's names. The language-model family comes from the checkpoint's config.json. A run
started from a plain language model plus `--vision_tower` builds the visual modules; a run started from
a saved llava checkpoint keeps the ones its config describes. Started again with the same command, a run
resumes from the newest complete checkpoint in --output_dir.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
import torch.distributed as dist
import transformers
from transformers import AutoTokenizer, HfArgumentParser, set_seed
from transformers.trainer_callback import ProgressCallback

from ..model.builder import family_of, from_pretrained
from ..model.llava_arch import DEFAULT_FAST_GRID, DEFAULT_SLOW_GRID, max_positions
from . import checkpoints
from .callbacks import LossProgressBar
from .milestones import WordMilestoneCallback, parse_milestones, read_word_count
from .feature_cache import FeatureCache
from .data import DataArguments, DataCollatorForSupervisedDataset, LazySupervisedDataset, SkipTracker, ensure_pad_token
from .trainer import LlavaTrainer

logger = logging.getLogger("llava.train")

TUNABLE_PARTS = ("mm_vision_tower", "mm_vision_resampler", "mm_mlp_adapter", "mm_language_model")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Language model folder or hub id (GPT-2/BAMBI, Llama, ...), or a llava checkpoint."})
    version: str = field(default="plain", metadata={"help": "Prompt template: 'plain' for caption LMs such as GPT-2, 'chat' for chat families."})
    vision_tower: str | None = field(default=None, metadata={"help": "Vision tower folder or hub id (e.g. facebook/dinov2-large). Omit for text-only training."})
    mm_vision_select_layer: int = field(default=-2, metadata={"help": "Hidden layer of the tower whose patch tokens are used."})
    mm_projector_type: str = field(default="mlp2x_gelu", metadata={"help": "linear, identity or mlpNx_gelu."})
    mm_projector_hidden_size: int | None = field(default=None, metadata={"help": "Hidden width of the MLP projector (seed: 2560); default the LM's width."})
    mm_resampler_type: str | None = field(default="fast_slow_token_packer", metadata={"help": "fast_slow_token_packer, or none for every patch."})
    mm_fast_grid: list[int] = field(default_factory=lambda: list(DEFAULT_FAST_GRID), metadata={"help": "Fast track output grid: frames rows columns."})
    mm_slow_grid: list[int] = field(default_factory=lambda: list(DEFAULT_SLOW_GRID), metadata={"help": "Slow track output grid: frames rows columns."})
    mm_packer_num_heads: int = field(default=8, metadata={"help": "Attention heads of each packer track."})
    mm_tunable_parts: str = field(
        default="mm_vision_resampler,mm_mlp_adapter,mm_language_model",
        metadata={"help": f"Comma-separated parts to train, of: {', '.join(TUNABLE_PARTS)}."},
    )
    pretrain_mm_mlp_adapter: str | None = field(default=None, metadata={"help": "mm_projector.bin of an adapter-only run to start from."})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa (the default, where the family has it: all but MPT) or eager."})


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    model_max_length: int | None = field(default=None, metadata={"help": "Longest sequence (visual + text); at most the LM's positions, which is the default."})
    mm_projector_lr: float | None = field(default=None, metadata={"help": "Learning rate of the resampler, projector and embeddings (default: --learning_rate)."})
    babylm_word_milestones: bool = field(default=False, metadata={"help": "Save a model at every 1M words up to 10M, 10M up to 100M, 100M up to 1B (answer words trained, all ranks)."})
    word_milestones: str | None = field(default=None, metadata={"help": "Comma-separated word counts at which to save a model (besides or instead of the BabyLM ones)."})
    max_words: int | None = field(default=None, metadata={"help": "Stop once this many answer words have been trained."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: batches carry clips."})


def parse_args(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # Without CUDA the Trainer would believe it has one GPU (and DeepSpeed's batch checks fail): make the
    # CPU explicit, so the same command line runs on a laptop and on a cluster.
    if not torch.cuda.is_available() and not any(a.startswith("--use_cpu") for a in argv):
        argv += ["--use_cpu", "True"]
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


def _setup_logging(training_args) -> None:
    level = logging.INFO if training_args.local_process_index == 0 and training_args.process_index == 0 else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, force=True)
    transformers.utils.logging.set_verbosity(level if level == logging.WARNING else logging.WARNING)


def build_model(model_args, data_args, training_args):
    family = family_of(model_args.model_name_or_path)
    model = from_pretrained(family, model_args.model_name_or_path, model_args.attn_implementation)
    model.config.use_cache = False

    positions = max_positions(model.config)
    if training_args.model_max_length is None:
        training_args.model_max_length = positions
    elif positions is not None and training_args.model_max_length > positions:
        raise ValueError(
            f"--model_max_length {training_args.model_max_length} is more than the language model's "
            f"{positions} positions ({model_args.model_name_or_path}); use at most {positions}"
        )

    if model_args.vision_tower or model.get_vision_tower() is not None:
        settings = SimpleNamespace(**vars(model_args), num_frames=data_args.num_frames)
        model.get_model().initialize_vision_modules(settings)
    apply_tunable_parts(model, model_args.mm_tunable_parts)
    # --gradient_checkpointing is transformers' older name of --activation_checkpointing; both arrive here.
    if training_args.activation_checkpointing:
        if training_args.activation_checkpointing_kwargs is None:
            training_args.activation_checkpointing_kwargs = {"use_reentrant": False}
        # A frozen LM gives checkpointed blocks inputs that need no grad; with reentrant checkpointing
        # the adapter would then get none. Requiring grad on the embeddings' output avoids that.
        model.enable_input_require_grads()
    return family, model


def apply_tunable_parts(model, parts: str) -> None:
    chosen = {p.strip() for p in parts.split(",") if p.strip()}
    unknown = chosen - set(TUNABLE_PARTS)
    if unknown:
        raise ValueError(f"unknown --mm_tunable_parts {sorted(unknown)}; choose from {', '.join(TUNABLE_PARTS)}")
    model.requires_grad_("mm_language_model" in chosen)
    inner = model.get_model()
    if inner.get_vision_tower() is not None:
        inner.vision_tower.requires_grad_("mm_vision_tower" in chosen)
        inner.vision_resampler.requires_grad_("mm_vision_resampler" in chosen)
        inner.mm_projector.requires_grad_("mm_mlp_adapter" in chosen)
        inner.mm_pos_embed.requires_grad_("mm_mlp_adapter" in chosen)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"--mm_tunable_parts {parts!r} leaves nothing to train in this model")


def _count(module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in module.parameters()) - trainable


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
        shape = " -> ".join([str(linears[0].in_features)] + [str(m.out_features) for m in linears]) if linears else "identity"
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
    visual_ids = {id(p) for m in parts.values() for p in m.parameters()}
    lm_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in visual_ids)
    lm_total = sum(p.numel() for p in model.parameters() if id(p) not in visual_ids)
    counts = {name: _count(m) for name, m in parts.items()}
    counts["language model"] = (lm_trainable, lm_total - lm_trainable)
    for name, (trainable, frozen) in counts.items():
        lines.append(f"  {name:<15} trainable {trainable:>12,}  frozen {frozen:>12,}")
    logger.info("built:\n  %s", "\n  ".join(lines))


def build_data(model_args, data_args, training_args, tokenizer, model):
    if not data_args.data_path:
        raise ValueError("--data_path is required")
    ensure_pad_token(tokenizer, model)
    tower = model.get_vision_tower()
    cache = None
    if data_args.feature_cache:
        if tower is None:
            raise ValueError("--feature_cache needs a model with a vision tower (--vision_tower)")
        cache = FeatureCache(data_args.feature_cache, tower)
    dataset = LazySupervisedDataset(
        data_args.data_path,
        tokenizer,
        data_args,
        image_processor=tower.image_processor if tower is not None else None,
        template=model_args.version,
        model_max_length=training_args.model_max_length,
        visual_tokens_per_input=model.get_model().num_visual_tokens if tower is not None else None,
        feature_cache=cache,
    )
    skips = SkipTracker(training_args.output_dir, len(dataset), data_args.max_skip_fraction, rank=training_args.process_index)
    return dataset, DataCollatorForSupervisedDataset(tokenizer), skips


def main(argv: list[str] | None = None):
    model_args, data_args, training_args = parse_args(argv)
    _setup_logging(training_args)
    set_seed(training_args.seed)
    if training_args.deepspeed:
        # ZeRO-3 partitions weights while from_pretrained builds the model; DeepSpeed must know the
        # world size by then, or its batch-size check fails.
        import deepspeed

        deepspeed.init_distributed(dist_backend=None)
    family, model = build_model(model_args, data_args, training_args)

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, model_max_length=training_args.model_max_length)
    train_dataset, collator, skip_tracker = build_data(model_args, data_args, training_args, tokenizer, model)
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
    trainer = LlavaTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        skip_tracker=skip_tracker,
        counting_words=counting,
    )
    if counting:
        trainer.add_callback(WordMilestoneCallback(trainer, milestones, training_args.max_words))
        if resume:
            trainer.words_seen = read_word_count(resume)
    trainer.remove_callback(ProgressCallback)  # replaced by a bar that shows loss and samples/s
    trainer.add_callback(LossProgressBar())
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    trainer.save_model(training_args.output_dir)
    if trainer.args.should_save:
        logger.info("final model saved to %s (%d clips skipped)", training_args.output_dir, skip_tracker.count)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return trainer


def cli() -> None:
    distributed = False
    try:
        main()
        distributed = dist.is_available() and dist.is_initialized()
    finally:
        # Ending every rank together avoids most of the aborts at exit seen with ZeRO-3 on the CPU.
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if distributed:
        # Even so, a rank sometimes aborts while the interpreter tears down DeepSpeed's and gloo's native
        # threads ("terminate called without an active exception"), after everything is saved, and the
        # launcher then reports the whole run as failed. Past this point there is nothing left to do:
        # flush and leave without the teardown.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    cli()
