"""What the rows measure for one configuration: the training script's own model and data sets, built from
its flags (online: pixels through the frozen tower; cached: the feature cache), a batch of each already
loaded, the optimizer, and the steps timed."""

from __future__ import annotations

import contextlib
import dataclasses
import time
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
        start = time.perf_counter()
        summary = cache_features.main(
            train_argv(shapes, self.assets, workdir, cache_dir)
            + ["--dataloader_num_workers", "0", "--device", str(device)]
        )
        # None when an earlier run filled the cache: this run did not time its making.
        self.cache_seconds = (time.perf_counter() - start) if summary["computed"] else None
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
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-5)

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

    def loader(self, dataset, min_batches: int):
        """A DataLoader as the training's, over enough passes of `dataset` for `min_batches` batches."""
        from torch.utils.data import ConcatDataset, DataLoader

        passes = -(-min_batches * self.shapes.batch_size // len(dataset))
        return DataLoader(
            ConcatDataset([dataset] * passes),
            batch_size=self.shapes.batch_size,
            num_workers=self.workers,
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

    def lm_forward_backward(self, ids, mask, labels) -> None:
        """The language model alone: text ids, no visual input."""
        with self.autocast():
            loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()

    def tower_forward(self, frames: torch.Tensor):
        """The frozen tower's forward on `frames`, as a function to time."""
        tower = self.model.get_vision_tower()

        def forward():
            with torch.no_grad(), self.autocast():
                tower(frames)

        return forward
