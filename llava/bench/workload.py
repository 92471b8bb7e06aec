"""What the rows measure for one configuration: the training script's own model and data sets, built from
its flags (online: pixels through the frozen tower; cached: the feature cache), a batch of each already
loaded, the optimizer, and the steps timed."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from pathlib import Path

import torch

from .assets import build_assets, train_argv
from .configs import Shapes


class Workload:
    def __init__(self, shapes: Shapes, workdir: Path, device: torch.device, workers: int):
        """Builds the assets (or reuses them), fills the feature cache, and builds the model and data as
        the training script does: minutes at the seed's shapes."""
        from ..train import cache_features, train

        self.shapes, self.device, self.workers = shapes, device, workers
        self.autocast_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
        self.assets = build_assets(shapes, workdir)
        cache_dir = str(workdir / shapes.name / "feature-cache")
        # With cache_features' own default workers, as a user runs it. Its summary holds the seconds of its
        # set-up, of its loop and of the tower's forward within the loop; None when an earlier run filled
        # the cache (this run did not time its making).
        summary = cache_features.main(train_argv(shapes, self.assets, workdir, cache_dir) + ["--device", str(device)])
        self.cache_summary = summary if summary["computed"] else None
        args = train.parse_args(train_argv(shapes, self.assets, workdir))
        built, tokenizer, online, self.collator, _ = train.model_and_data(args)
        self.model = built.model.to(device).train()
        with_cache = dataclasses.replace(args, data=dataclasses.replace(args.data, feature_cache=cache_dir))
        cached, _, _ = train.build_data(with_cache, built, tokenizer)
        if len(cached.cache_keys) != len(cached):
            raise RuntimeError("the feature cache does not hold every benchmark clip")
        self.datasets = {"online": online, "cached": cached}
        self.batches = {
            source: self.to_device(self.collator([dataset[i] for i in range(shapes.batch_size)]))
            for source, dataset in self.datasets.items()
        }
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # The Trainer's default optimizer (transformers' adamw_torch_fused). A step skips parameters
        # without gradients, so the language model's step alone updates the language model alone.
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
        self.text_batch = self._text_batch_like(self.batches["cached"])

    def autocast(self):
        """bf16 autocast on a GPU that has it; float32 otherwise."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_device(self, batch: dict) -> dict:
        """A collated batch on the device, without the collator's count of skipped samples."""

        def move(x):
            if isinstance(x, torch.Tensor):
                return x.to(self.device)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            if isinstance(x, list):
                return [move(v) for v in x]
            return x

        return {k: move(v) for k, v in batch.items() if k != "skipped"}

    def _text_batch_like(self, batch: dict) -> dict:
        """Random text ids as long as `batch`'s spliced sequences, with their mask and labels (the same
        loss positions): what the language model alone computes in a step of the same shapes."""
        with torch.no_grad():
            _, _, mask, _, _, labels = self.model.prepare_inputs_labels_for_multimodal(
                batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], batch["images"]
            )
        ids = torch.randint(0, self.model.config.vocab_size, mask.shape, device=self.device)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def loader(self, dataset, min_batches: int, batch_size: int | None = None, workers: int | None = None):
        """A DataLoader as the training's (its workers kept across epochs), over enough passes of
        `dataset` for `min_batches` batches per epoch."""
        from torch.utils.data import ConcatDataset, DataLoader

        batch_size = batch_size or self.shapes.batch_size
        workers = self.workers if workers is None else workers
        # The recipe's workers on a machine with fewer cores are what a user runs, measured as such; torch's
        # advice to use fewer is not for this table.
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        passes = -(-min_batches * batch_size // len(dataset))
        return DataLoader(
            ConcatDataset([dataset] * passes),
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=self.collator,
        )

    # ---------------------------------------------------------------------------------- the steps
    def forward_backward(self, batch: dict) -> None:
        with self.autocast():
            loss = self.model(**batch).loss
        loss.backward()

    def train_step(self, batch: dict) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward(batch)
        self.optimizer.step()

    def lm_forward_backward(self) -> None:
        """The language model alone on `text_batch`: text ids, no visual input."""
        self.forward_backward(self.text_batch)

    def lm_train_step(self) -> None:
        """The language model's own training step (forward, backward, AdamW over its parameters): the
        floor of any multimodal step, whatever the visual path costs."""
        self.train_step(self.text_batch)

    def tower_forward(self, frames: torch.Tensor):
        """The frozen tower's forward on `frames`, as a function to time."""
        tower = self.model.get_vision_tower()

        def forward():
            with torch.no_grad(), self.autocast():
                tower(frames)

        return forward
