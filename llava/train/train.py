"""Training entry point: `python -m llava.train.train ARGS`, or LLaVA's `llava/train/train_mem.py ARGS`
(also under torchrun and DeepSpeed).

The pipeline: the command line (arguments.py: a recipe, flags, LLaVA's legacy flags) -> preflight.py's
checks (paths, the model folder, every data file, all their problems in one line) -> the model (the
family from the checkpoint's config.json; a plain language model plus `--vision_tower` gets the visual
modules, a saved llava checkpoint keeps the ones its config describes) -> the data -> LlavaTrainer.train
-> the final model. Started again with the same command, a run resumes from the newest complete
checkpoint in --output_dir. How a run ends (the one `error:` line, which rank says it, the exit status)
is exit_policy.py's; a run that got as far as training ends its log with one summary line.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import record
from transformers import AutoTokenizer, set_seed
from transformers.trainer_callback import ProgressCallback

from ..constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
from ..data.dataset import DataCollatorForSupervisedDataset, LazySupervisedDataset, ensure_pad_token
from ..data.prompts import PromptSettings
from ..data.run_record import condition_of, write_run_record
from ..data.templates import trained_version
from ..errors import UsageError
from ..model.builder import family_of, from_pretrained
from ..model.load_options import attention_request
from ..model.lora import is_lora_model
from ..modeling.coordinate_tokens import add_coordinate_tokens
from ..modeling.coordinates import BINS
from ..modeling.families import BY_LLAVA_TYPE, FAMILIES
from ..modeling.llava_arch import max_positions
from . import checkpoints, exit_policy, lora, preemption, preflight
from .arguments import RunArguments, parse_args
from .callbacks import LossProgressBar
from .describe import describe
from .feature_cache import FeatureCache
from .legacy_flags import FlagError
from .milestone_eval import BackgroundEvaluators
from .milestones import WordMilestoneCallback, parse_milestones, read_word_count
from .skipped_samples import SkipTracker
from .trainer import LlavaTrainer
from .tunable_parts import apply_tunable_parts, coordinate_tables_train

logger = logging.getLogger("llava.train")


@dataclass
class BuiltModel:
    """The model a run trains, and what its flags resolve to for it: the prompt template, the sequence
    budget (at most the language model's positions), the frames a clip is read at (at most what its
    packer is built for) and the prompt settings (the flags over the checkpoint's own)."""

    family: str
    path: str
    model: object
    fresh_adapter: bool  # the adapter was built in this run, not loaded
    version: str
    max_length: int | None
    num_frames: int
    prompt: PromptSettings
    # Where the tokenizer comes from: the language model's folder, or --load_lora_path's, whose run may
    # have added tokens (coordinate tokens: LLaVA-ST's stage 3 on top of stage 2).
    tokenizer_path: str


def build_model(args: RunArguments) -> BuiltModel:
    path = args.model.model_name_or_path
    family = family_of(path, "--model_name_or_path")
    check_model_class_name(args.model.model_class_name, family)
    model = from_pretrained(family, path, attention_request(args.model.attn_implementation))
    model.config.use_cache = False
    fresh_adapter = False
    if args.vision.vision_tower or model.get_vision_tower() is not None:
        fresh_adapter = bool(model.get_model().initialize_vision_modules(args.vision))
    merged = []
    if args.lora.load_lora_path:
        model, merged, loaded_adapter = lora.merge_earlier_adapters(model, args.lora.load_lora_path)
        fresh_adapter = fresh_adapter and not loaded_adapter
    prompt = args.prompt.over(model.config)
    prompt.write(model.config)  # inference writes its prompts the way this run trains on them
    version = args.model.version or trained_version(model.config)
    model.config.conv_template = version
    if args.lora.lora_enable:
        model = lora.add_adapters(model, args.lora, merged)
    lora_bias = args.lora.lora_bias if args.lora.lora_enable else None
    apply_tunable_parts(model, args.model.mm_tunable_parts, fresh_adapter=fresh_adapter, lora_bias=lora_bias)
    if args.training.activation_checkpointing:
        # A frozen LM gives checkpointed blocks inputs that need no grad; with reentrant checkpointing
        # the adapter would then get none. Requiring grad on the embeddings' output avoids that.
        model.enable_input_require_grads()
    return BuiltModel(
        family,
        path,
        model,
        fresh_adapter,
        version,
        sequence_budget(args.training.model_max_length, model.config, path),
        frames_per_clip(args.vision.num_frames, model.config),
        prompt,
        args.lora.load_lora_path or path,
    )


def sequence_budget(requested: int | None, config, path: str) -> int | None:
    """The longest sequence a run trains on: --model_max_length, at most the language model's positions
    (LLaVA's scripts pass 2048-32768 whatever the model), which is also the default."""
    positions = max_positions(config)
    if requested is None:
        return positions
    if positions is not None and requested > positions:
        logger.warning(
            "--model_max_length %d is more than the language model's %d positions (%s): using %d",
            requested,
            positions,
            path,
            positions,
        )
        return positions
    return requested


def frames_per_clip(requested: int, config) -> int:
    """The frames a clip is read at: --num_frames, at most the `mm_num_frames` the model's packer is built
    for (a checkpoint built for fewer reads its own count)."""
    most = getattr(config, "mm_num_frames", None)
    if most is not None and requested > most:
        logger.warning(
            "clips are read at %d frames, not %d: this model's packer is built for %d (mm_num_frames)",
            most,
            requested,
            most,
        )
        return most
    return requested


def check_model_class_name(name: str | None, family: str) -> None:
    """`--model_class_name LlavaQwenForCausalLM` (LLaVA-NeXT chooses the class by it) must name the family
    that the checkpoint's config.json gives; the family always comes from there."""
    if not name:
        return
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


def load_tokenizer(built: BuiltModel):
    return AutoTokenizer.from_pretrained(built.tokenizer_path, model_max_length=built.max_length)


def add_visual_tokens(model, tokenizer, prompt: PromptSettings) -> None:
    """LLaVA's tokens for `--mm_use_im_patch_token` (<im_patch>) and `--mm_use_im_start_end`
    (<im_start>, <im_end>): added to the tokenizer as special tokens, and the embeddings resized where the
    vocabulary has no spare rows (transformers' mean resizing: new rows drawn around the others' mean;
    tied heads stay tied)."""
    tokens = []
    if prompt.mm_use_im_patch_token:
        tokens.append(DEFAULT_IMAGE_PATCH_TOKEN)
    if prompt.mm_use_im_start_end:
        tokens += [DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
    if not tokens:
        return
    added = tokenizer.add_tokens(tokens, special_tokens=True)
    if not added:  # a checkpoint trained with them has them
        return
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    logger.info("added %s to the tokenizer (%d tokens now)", ", ".join(tokens), len(tokenizer))
    # (A LoRA run trains them once the data is built: lora.train_grown_embeddings.)
    if not is_lora_model(model) and not any(p.requires_grad for p in model.get_input_embeddings().parameters()):
        logger.warning(
            "the embeddings of %s do not train in this run (the language model is frozen): they keep their "
            "initial values; add mm_language_model to --mm_tunable_parts to learn them",
            ", ".join(tokens),
        )


def build_data(args: RunArguments, built: BuiltModel, tokenizer, samples: list[dict] | None = None):
    """The data set, its collator and its skip tracker. `samples`: the validated samples of --data_path
    (preflight.check's), read here where not given."""
    data, training, model = args.data, args.training, built.model
    if not data.data_path:
        raise UsageError("--data_path is required: the JSON list or JSONL file of training samples")
    ensure_pad_token(tokenizer, model)
    tower = model.get_vision_tower()
    cache = None
    if data.feature_cache:
        if tower is None:
            raise UsageError(
                f"--feature_cache needs a model with a vision tower: give --vision_tower ({data.feature_cache})"
            )
        cache = FeatureCache(data.feature_cache, tower)
    add_visual_tokens(model, tokenizer, built.prompt)
    if args.model.coordinate_tokens and add_coordinate_tokens(model, tokenizer):  # the last change to the vocabulary
        coordinate_tables_train(model, args.model.mm_tunable_parts)
        logger.info("added coordinate tokens: %d bins per axis (%d tokens now)", BINS, len(tokenizer))
    visual_tokens = None
    if tower is not None:
        inner = model.get_model()
        # A longer clip reaches the model sampled down to its frame count: count the tokens it gets.
        visual_tokens = lambda frames: inner.num_visual_tokens(min(frames, built.num_frames))  # noqa: E731
    prompt = built.prompt if tower is not None else dataclasses.replace(built.prompt, mm_use_im_start_end=False)
    dataset = LazySupervisedDataset(
        data.data_path,
        tokenizer,
        num_frames=built.num_frames,
        folders=data,
        prompt=prompt,
        image_processor=tower.image_processor if tower is not None else None,
        template=built.version,
        model_max_length=built.max_length,
        visual_tokens_per_input=visual_tokens,
        feature_cache=cache,
        seed=training.seed,
        samples=samples,
    )
    skips = SkipTracker(training.output_dir, len(dataset), data.max_skip_fraction, rank=training.process_index)
    return dataset, DataCollatorForSupervisedDataset(tokenizer), skips


def model_and_data(args: RunArguments, samples: list[dict] | None = None):
    """`(built model, tokenizer, data set, collator, skip tracker)` of a run's arguments: what its trainer
    trains (the benchmarks and tests build these without a trainer)."""
    built = build_model(args)
    tokenizer = load_tokenizer(built)
    rows = built.model.get_input_embeddings().num_embeddings
    data = build_data(args, built, tokenizer, samples)
    if args.lora.lora_enable:
        lora.train_grown_embeddings(built.model, rows)
    return (built, tokenizer, *data)


def build_trainer(
    argv: list[str] | None = None, stop: preemption.StopSignals | None = None
) -> tuple[LlavaTrainer, str | None]:
    """Everything a run needs, from its command line: the trainer, and the checkpoint to resume from.
    `stop` (active StopSignals) makes the run save and stop on SIGTERM, SIGINT and SIGUSR1."""
    args = parse_args(argv)
    training = args.training
    # Paths, data files and the model folder, checked before anything is loaded (and before DeepSpeed
    # starts): every rank finds the same problems, and the samples read here are the data set's.
    checked = preflight.check(args)
    set_seed(training.seed)
    if training.deepspeed:
        # ZeRO-3 partitions weights while from_pretrained builds the model; DeepSpeed must know the
        # world size by then, or its batch-size check fails.
        import deepspeed

        deepspeed.init_distributed(dist_backend=None)
    built, tokenizer, train_dataset, collator, skip_tracker = model_and_data(args, checked.samples)
    describe(built, training)

    resume = None
    if training.process_index == 0:
        checkpoints.remove_incomplete_checkpoints(training.output_dir)
        write_run_record(
            training.output_dir,
            {
                "condition": condition_of(checked.samples),
                "seed": training.seed,
                "model_name_or_path": args.model.model_name_or_path,
                "vision_tower": args.vision.vision_tower,
                "data_path": args.data.data_path,
                "max_words": training.max_words,
            },
        )
    with training.main_process_first():
        resume = checkpoints.newest_complete_checkpoint(training.output_dir)
    if resume:
        logger.info("resuming from %s", resume)

    milestones = parse_milestones(training.babylm_word_milestones, training.word_milestones)
    counting = bool(milestones) or training.max_words is not None
    evaluators = (
        BackgroundEvaluators(training.output_dir, training.eval_milestones) if training.eval_milestones else None
    )
    trainer = LlavaTrainer(
        model=built.model,
        args=training,
        train_dataset=train_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        skip_tracker=skip_tracker,
        counting_words=counting,
        evaluators=evaluators,
    )
    if counting:
        trainer.add_callback(WordMilestoneCallback(trainer, milestones, training.max_words))
        if resume:
            trainer.words_seen = read_word_count(resume)
    trainer.remove_callback(ProgressCallback)  # replaced by a bar that shows loss and samples/s
    trainer.add_callback(LossProgressBar())
    trainer.add_callback(preemption.StopAndIntervalCheckpoints(stop, training.save_every_minutes))
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


def main(argv: list[str] | None = None, run: exit_policy.Run | None = None) -> LlavaTrainer:
    """Trains as `argv` says, and logs the run's summary as its last line. Told to stop by a signal, it
    saves a checkpoint after the current step and raises preemption.TrainingInterrupted. `run` is told
    the trainer as soon as it exists."""
    run = run if run is not None else exit_policy.Run()
    with preemption.StopSignals() as stop:
        trainer, resume = build_trainer(argv, stop)
        run.trainer = trainer
        train_and_save(trainer, resume)
    exit_policy.log_summary(trainer)
    return trainer


# `record`: under torchrun, an exception that ends a rank is written where the launcher reads it, and its
# summary names the rank and the exception (the first failure, as the root cause). Only bugs reach it:
# an expected failure ends in its one line and status.
@record
def cli() -> None:
    run = exit_policy.Run()
    status, distributed = 0, False
    try:
        main(run=run)
        distributed = dist.is_available() and dist.is_initialized()
    except (Exception, KeyboardInterrupt) as e:
        distributed = dist.is_available() and dist.is_initialized()
        status = exit_policy.report_failure(e, run)  # (a bug is raised again, and ends in its traceback)
    finally:
        # Ending every rank together avoids most of the aborts at exit seen with ZeRO-3 on the CPU.
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    exit_policy.leave(status, distributed)


if __name__ == "__main__":
    cli()
