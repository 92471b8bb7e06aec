"""The Trainer subclass: separate learning rates for the adapter and the vision tower, batches grouped by
modality and length, skipped clips handled honestly, and saves that are complete, resumable and
loadable with no flags."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import weakref

import torch
from transformers import Trainer, TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from .. import errors
from ..model.lora import is_lora_model, load_non_lora_weights, save_non_lora_weights
from ..modeling.adapter_weights import ADAPTER_MODULES, adapter_state_dict
from . import checkpoints
from .lockstep import stand_ins_for_step, uses_every_parameter
from .milestones import count_words, remove_word_count, write_word_count
from .sampler import ModalityLengthGroupedSampler

logger = logging.getLogger(__name__)

ADAPTER_FILE = "mm_projector.bin"


def is_adapter_parameter(name: str) -> bool:
    return any(f".{module}." in f".{name}" for module in ADAPTER_MODULES)


def is_tower_parameter(name: str) -> bool:
    return ".vision_tower." in f".{name}"


class LlavaTrainer(Trainer):
    def __init__(self, *args, skip_tracker=None, counting_words=False, evaluators=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_tracker = skip_tracker
        if skip_tracker is not None:
            self.add_callback(SkipCountSync(skip_tracker))
        # Words of trained answer text (see milestones.py): this rank's since the last optimizer step,
        # and the total over all ranks, saved in every checkpoint.
        self.counting_words = counting_words
        self.pending_words = 0
        self.words_seen = 0
        # --eval_milestones: each milestone (and the final model) evaluated in the background once saved
        # (milestone_eval.BackgroundEvaluators; global rank 0 starts them).
        self.evaluators = evaluators
        self._current_save: str | None = None  # what the save under way is called in an error message
        self._resumed_loader = None  # a weak reference to the loader of a resumed epoch, where there is one
        self._grouped_sampler = None  # the sampler of --group_by_modality_length / group_by_length, where used

    # ------------------------------------------------------------------------------- optimizer
    def _parameter_group(self, name: str) -> str:
        if self.args.mm_vision_tower_lr is not None and is_tower_parameter(name):
            return "tower"
        if self.args.mm_projector_lr is not None and is_adapter_parameter(name):
            return "adapter"
        return "rest"

    def create_optimizer(self, model=None):
        """Groups of (tower, adapter, the rest) x (decay, no decay). The tower takes `mm_vision_tower_lr`
        and the adapter (resampler, projector, embeddings) `mm_projector_lr`, where they are set."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        rates = {"tower": self.args.mm_vision_tower_lr, "adapter": self.args.mm_projector_lr, "rest": None}
        groups = {}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            key = (self._parameter_group(name), name in decay)
            if key not in groups:
                groups[key] = {"params": [], "weight_decay": self.args.weight_decay if key[1] else 0.0}
                if rates[key[0]] is not None:
                    groups[key]["lr"] = rates[key[0]]
            groups[key]["params"].append(param)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(list(groups.values()), **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------------------- data loading
    # Persistent DataLoader workers (--dataloader_persistent_workers) live as long as their loader: the
    # Trainer keeps the training loader past the end of train(), and the workers ignore SIGTERM
    # (preemption.WorkersIgnoreStopSignals), so multiprocessing's exit handler, which terminates them and
    # then joins them, would wait forever for a process that still held a trainer. They end with train().
    # A resumed epoch reads through a loader of its own (accelerate's skip_first_batches), with workers of
    # its own; that loader is dropped when its epoch ends, and its workers with it.
    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            end_workers(self.callback_handler.train_dataloader)
            end_workers(self._resumed_loader() if self._resumed_loader is not None else None)

    def get_resumed_dataloader(self, dataloader, num_batches):
        loader = super().get_resumed_dataloader(dataloader, num_batches)
        if self._grouped_sampler is not None:
            loader = epoch_reaches_sampler(loader, self._grouped_sampler)
        self._resumed_loader = weakref.ref(loader)
        return loader

    # -------------------------------------------------------------------------------- sampling
    def _get_train_sampler(self, train_dataset=None):
        """LLaVA's --group_by_modality_length (and --group_by_length) with lengths the dataset knows
        without reading any medium; transformers' own length grouping would load every sample."""
        dataset = self.train_dataset if train_dataset is None else train_dataset
        by_modality = self.args.group_by_modality_length
        if not (by_modality or self.args.train_sampling_strategy == "group_by_length") or not hasattr(
            dataset, "sample_lengths"
        ):
            return super()._get_train_sampler(train_dataset)
        lengths, has_media = dataset.sample_lengths()
        self._grouped_sampler = ModalityLengthGroupedSampler(
            lengths,
            has_media if by_modality else None,
            self.args.train_batch_size,
            self.args.world_size,
            seed=self.args.seed,
        )
        return self._grouped_sampler

    # ------------------------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        skipped = inputs.pop("skipped", None)
        if skipped and self.skip_tracker is not None and model.training:
            self.skip_tracker.note(skipped)  # counted over all ranks at the end of the step
        if self.counting_words and model.training and inputs["input_ids"].shape[0]:
            self.pending_words += count_words(inputs["labels"], self.processing_class)
        # Every rank runs the same modules in every step (see lockstep.py): where another rank's batch
        # holds visual inputs that this one lacks, this one encodes stand-ins that add an exact zero.
        stand_ins = stand_ins_for_step(
            self.accelerator.unwrap_model(model),
            inputs.get("images", []),
            self.args.device,
            zero3=is_deepspeed_zero3_enabled(),
            every_step=uses_every_parameter(model),
        )
        if inputs["input_ids"].shape[0] == 0:
            return self._empty_batch_loss(model, stand_ins, return_outputs)
        if stand_ins:
            inputs = {**inputs, "visual_stand_ins": stand_ins}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _empty_batch_loss(self, model, stand_ins, return_outputs):
        """Every clip of this batch was unreadable. The other ranks still run their step, so this rank
        runs the same modules, through the wrapped model (DDP arms its gradient hooks there, ZeRO-3
        gathers there): the language model on one token, the visual modules on stand-ins, for a loss of
        exactly zero. No sample stands in for the lost ones."""
        token = torch.zeros((1, 1), dtype=torch.long, device=self.args.device)
        outputs = model(input_ids=token, attention_mask=torch.ones_like(token), visual_stand_ins=stand_ins or None)
        zero = (torch.nan_to_num(outputs.logits, nan=0.0, posinf=0.0, neginf=0.0) * 0).sum()
        return (zero, outputs) if return_outputs else zero

    # ---------------------------------------------------------------------------------- saving
    # Every save runs inside `_saving`: a full disk or a refused write ends the run with one line naming
    # the save, its folder and the space it needs (errors.saving), never a library's "unexpected pos".
    def _save_checkpoint(self, model, trial):
        run_dir = self._get_output_dir(trial=trial)
        name = f"checkpoint-{self.state.global_step}"
        folder = os.path.join(run_dir, name)
        # Rotation waits until the new checkpoint is marked complete: a kill at any moment leaves at
        # least one complete checkpoint behind.
        keep, self.args.save_total_limit = self.args.save_total_limit, None
        # The whole save, DeepSpeed's own files included (its engine writes the optimizer shards with
        # torch.save from inside super()._save_checkpoint), up to and including the completion marker.
        with self._saving(folder, name, self._checkpoint_bytes(run_dir), discard=True):
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.save_total_limit = keep
            if self.args.should_save:
                write_word_count(folder, self.words_seen)
            checkpoints.mark_complete(folder, self.state.global_step)
        if self.args.should_save:
            checkpoints.rotate(run_dir, keep)

    def save_milestone(self, label: str) -> str:
        """Saves the model (loadable with no flags) in `checkpoint-words-{label}`; call on every rank."""
        name = f"checkpoint-words-{label}"
        folder = os.path.join(self.args.output_dir, name)
        with self._saving(folder, name, self._model_bytes(), discard=True):
            self.save_model(folder)
            if self.args.should_save:
                write_word_count(folder, self.words_seen)
        if self.args.should_save:
            logger.info("%s words seen: saved %s", f"{self.words_seen:,}", folder)
        self._evaluate_in_background(name)
        return folder

    def save_final_model(self) -> None:
        """The final model in --output_dir; where words are counted, with the words it has seen (which
        also makes it a point of the learning curve) and, with --eval_milestones, its evaluation started."""
        output_dir = self.args.output_dir
        if self.args.should_save:
            # An earlier final model's count would mark this one complete while it is being written.
            remove_word_count(output_dir)
        self.save_model(output_dir)
        if self.counting_words:
            if self.args.should_save:
                with self._saving(output_dir, "the model"):
                    write_word_count(output_dir, self.words_seen)
            self._evaluate_in_background("the final model")

    def _evaluate_in_background(self, what: str) -> None:
        # Global rank 0 only: it wrote the word count that marks the save complete (with save_on_each_node
        # other nodes save copies, which one evaluation covers).
        if self.evaluators is not None and self.is_world_process_zero():
            self.evaluators.start(what)

    def save_model(self, output_dir=None, _internal_call=False):
        # The final model, in --output_dir (inside a checkpoint or milestone save, that save's context
        # applies). Nothing is discarded here: the folder holds the run's checkpoints.
        with self._saving(output_dir or self.args.output_dir, "the model", self._model_bytes()):
            super().save_model(output_dir, _internal_call=_internal_call)

    def save_state(self):
        with self._saving(os.path.join(self.args.output_dir, "trainer_state.json"), "the trainer state"):
            super().save_state()

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir or self.args.output_dir
        model = self.accelerator.unwrap_model(self.model)
        tower = model.get_vision_tower()
        if tower is not None:  # every saved model carries its preprocessing
            tower.image_processor.save_pretrained(output_dir)
        if is_lora_model(model) and self.args.should_save:  # beside the adapter peft wrote, as LLaVA saves
            save_non_lora_weights(model, output_dir, state_dict)
        if _only_adapter_trains(model):
            weights = adapter_state_dict(model.get_model())
            if state_dict is not None:  # gathered weights (ZeRO-3): take the adapter's from them
                weights = {k: state_dict[f"{model.base_model_prefix}.{k}"] for k in weights}
            torch.save({k: v.detach().cpu() for k, v in weights.items()}, os.path.join(output_dir, ADAPTER_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # The Trainer restores a LoRA model's adapter from the checkpoint; the other weights that train
        # (packer, projector, ...) are in non_lora_trainables.bin. (Under DeepSpeed its own checkpoint
        # restores every weight, and this is not called.)
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = self.model if model is None else model
        if is_lora_model(model):
            load_non_lora_weights(model, resume_from_checkpoint)

    @contextlib.contextmanager
    def _saving(self, path: str, what: str, needed: int | None = None, discard: bool = False):
        """errors.saving for one save of this trainer. A save inside another (a checkpoint's model) is
        reported as the outer one. With `discard`, a folder this save created is removed when the save
        fails in a single-process run: it never got its completion marker, so nothing would resume from
        it, and removing it first makes the free space in the message what the next attempt has. (Under
        several ranks the others may still be writing into it; the next start removes it.)"""
        if self._current_save is not None:
            yield
            return
        created = not os.path.exists(path)
        self._current_save = what
        try:
            with errors.saving(path, what, needed=needed):
                try:
                    yield
                except Exception:
                    if discard and created and self.args.world_size == 1:
                        shutil.rmtree(path, ignore_errors=True)
                    raise
        finally:
            self._current_save = None

    def _model_bytes(self) -> int:
        """The model's weights at their full size (a ZeRO-3 partitioned parameter counts whole)."""
        model = self.accelerator.unwrap_model(self.model)
        return _tensor_bytes([*model.parameters(), *model.buffers()])

    def _checkpoint_bytes(self, run_dir: str) -> int:
        """About what a checkpoint save writes: the model plus this rank's optimizer state, or the size
        of the newest complete checkpoint where that is larger (it also counts the small files, and
        DeepSpeed's copy of the module states and every rank's shards on a shared disk)."""
        optimizer = (
            _optimizer_bytes(self.optimizer, self.accelerator.unwrap_model(self.model))
            if self.optimizer is not None
            else 0
        )
        return max(self._model_bytes() + optimizer, checkpoints.newest_complete_bytes(run_dir))


class SkipCountSync(TrainerCallback):
    """At the end of every optimizer step, every rank's unreadable samples are counted together (see
    SkipTracker.sync); past the limit every rank stops at this same point."""

    def __init__(self, tracker):
        self.tracker = tracker

    def on_step_end(self, args, state, control, **kwargs):
        self.tracker.sync(args.device)


def end_workers(loader) -> None:
    """Ends the worker processes that a DataLoader (or accelerate's wrapper of one) keeps between epochs
    (persistent workers); a later iteration would start new ones. None, or a loader without persistent
    workers: nothing to do. (torch has no public call for it: the loader's `_iterator` holds the workers,
    and `_shutdown_workers` is what that iterator's own `__del__` calls.)"""
    loader = getattr(loader, "base_dataloader", loader)
    iterator = getattr(loader, "_iterator", None)
    if iterator is None:
        return
    loader._iterator = None
    if hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def _tensor_bytes(tensors) -> int:
    """Bytes of distinct tensors (a tied weight once; a ZeRO-3 partitioned parameter at its full size)."""
    seen, total = set(), 0
    for tensor in tensors:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += getattr(tensor, "ds_numel", tensor.numel()) * tensor.element_size()
    return total


def _optimizer_bytes(optimizer, model) -> int:
    """This rank's optimizer state as a checkpoint stores it: the per-parameter state (Adam's moments),
    plus the weights the optimizer keeps as its own copies (DeepSpeed ZeRO's fp32 partitions), found in
    the innermost torch optimizer under the wrappers (accelerate's, DeepSpeed's)."""
    inner = optimizer
    while getattr(inner, "optimizer", None) is not None and inner.optimizer is not inner:
        inner = inner.optimizer
    if not isinstance(inner, torch.optim.Optimizer):
        return 0
    own = {id(p) for p in model.parameters()}
    tensors = [value for state in inner.state.values() for value in state.values() if torch.is_tensor(value)]
    tensors += [p for group in inner.param_groups for p in group["params"] if id(p) not in own]
    return _tensor_bytes(tensors)


def _only_adapter_trains(model) -> bool:
    if model.get_vision_tower() is None:
        return False
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    return bool(trainable) and all(is_adapter_parameter(name) for name in trainable)


def epoch_reaches_sampler(loader, sampler):
    """`loader` (a resumed epoch's, from accelerate's skip_first_batches) with its `set_epoch` reaching
    `sampler` too. With several ranks the skip loader's batch sampler wraps accelerate's shard wrapper,
    and neither accelerate's `set_epoch` nor the Trainer's reach through both to our sampler: the rest of a
    resumed epoch would be drawn in epoch 0's order."""
    forward = getattr(loader, "set_epoch", None)

    def set_epoch(epoch: int) -> None:
        if forward is not None:
            forward(epoch)
        sampler.set_epoch(epoch)

    loader.set_epoch = set_epoch
    return loader
