"""One code version's side of `python -m llava.bench.versions`: run as a script, with PYTHONPATH naming the
checkout whose `llava` is measured, it builds that version's benchmark model and cached data set, then
answers timing requests on stdin, one JSON line each way, so that two versions' calls can alternate.

Self-contained on purpose: it imports nothing of the package that runs it, only the measured version's
benchmark set-up (the `llava.bench` package of today, or the single `llava/bench.py` module it replaced),
and times every version with this file's own code: the same step (zero gradients, forward, backward, fused
AdamW over the trainable parameters) and the same loader loop.

Requests: {"measure": "cached_step" | "lm_step"} -> {"seconds": s};
{"measure": "loader", "workers": n, "batch": b, "batches": k} -> {"seconds": s, "clips": c, "bytes": n}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import torch


def build(config: str, workdir: Path, workers: int):
    """(model, collator, cached data set, batch size) from the measured version's own benchmark set-up."""
    try:
        from llava.bench.configs import SHAPES
        from llava.bench.workload import Workload
    except ImportError:
        try:
            from llava.bench import SHAPES, Bench  # the single-module benchmark (until the package)
        except ImportError:
            raise SystemExit("this version has neither llava/bench/workload.py nor llava/bench.py's Bench") from None
        bench = Bench(SHAPES[config], workdir, torch.device("cpu"), 1, workers)
        bench.setup()
        return bench.model, bench.collator, bench.cached, SHAPES[config].batch_size
    work = Workload(SHAPES[config], workdir, torch.device("cpu"), workers)
    return work.model, work.collator, work.datasets["cached"], SHAPES[config].batch_size


class Probe:
    def __init__(self, model, collator, cached, batch_size: int):
        self.model, self.collator, self.cached = model.train(), collator, cached
        self.batch = self._without_skipped(collator([cached[i] for i in range(batch_size)]))
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
        self.text = self._text_like(self.batch)

    @staticmethod
    def _without_skipped(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k != "skipped"}

    def _text_like(self, batch: dict) -> dict:
        """Random ids as long as the spliced sequences, with their mask and labels: the language model's
        own step at the same shapes and loss positions."""
        with torch.no_grad():
            _, _, mask, _, _, labels = self.model.prepare_inputs_labels_for_multimodal(
                batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], batch["images"]
            )
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.model.config.vocab_size, mask.shape, generator=generator)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def step(self, batch: dict) -> float:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        self.model(**batch).loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start

    def loader(self, workers: int, batch: int, batches: int) -> dict:
        """One pass of a fresh DataLoader over the cached set (repeated to `batches` + 1 batches), each
        batch's visual bytes copied once: the time after its first batch (the workers' start-up aside)."""
        from torch.utils.data import ConcatDataset, DataLoader

        passes = -(-(batches + 1) * batch // len(self.cached))
        data = DataLoader(
            ConcatDataset([self.cached] * passes), batch_size=batch, num_workers=workers, collate_fn=self.collator
        )
        iterator = iter(data)
        next(iterator)
        staging = torch.empty(0, dtype=torch.uint8)
        clips = nbytes = 0
        start = time.perf_counter()
        for received in iterator:
            for item in received["images"]:
                tensor = item["patch_features"] if isinstance(item, dict) else item
                flat = tensor.contiguous().reshape(-1).view(torch.uint8)
                if staging.numel() < flat.numel():
                    staging = torch.empty(flat.numel(), dtype=torch.uint8)
                staging[: flat.numel()].copy_(flat)
                nbytes += flat.numel()
            clips += len(received["images"])
        return {"seconds": time.perf_counter() - start, "clips": clips, "bytes": nbytes}

    def answer(self, request: dict) -> dict:
        measure = request["measure"]
        if measure == "cached_step":
            return {"seconds": self.step(self.batch)}
        if measure == "lm_step":
            return {"seconds": self.step(self.text)}
        if measure == "loader":
            return self.loader(request["workers"], request["batch"], request["batches"])
        raise ValueError(f"unknown measure {measure!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args()
    # The answers keep the process's stdout to themselves: whatever else prints (the version's set-up, its
    # libraries, C code) goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    probe = Probe(*build(args.config, Path(args.workdir), args.workers))
    for answer in itertools.chain([{"ready": True}], (probe.answer(json.loads(line)) for line in sys.stdin)):
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
