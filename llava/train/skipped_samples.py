"""Unreadable samples over all ranks: each counted once, logged once, listed once in
`OUTPUT_DIR/skipped_samples.jsonl`, and the run stopped on every rank together past --max_skip_fraction.

The dataset turns a sample whose medium cannot be read into a skip record (llava/data/dataset.py), the
collator passes it on, and the trainer hands it to `SkipTracker` at each optimizer step.
"""

from __future__ import annotations

import json
import logging
import os

import torch
import torch.distributed as dist

from ..errors import UserError
from .ranks import is_distributed

logger = logging.getLogger(__name__)

SKIPPED_FILE = "skipped_samples.jsonl"


class SkipLimitExceeded(UserError, RuntimeError):
    """More samples could not be read than --max_skip_fraction allows; raised on every rank at once."""


class SkipTracker:
    """Counts unreadable samples over all ranks, once per sample, lists each once, and stops the run past
    `max_fraction` of the data set.

    A sample is its index in the data set: two samples that share a clip (or an id) are two skips, and a
    sample met again (a later epoch, or the samples that pad a distributed epoch) is counted once. A rank
    `note`s what its batches skip; at the end of each optimizer step `sync` gathers what every rank noted
    (one small all-reduce, then a gather only if something was skipped), rank 0 appends the new samples
    to `output_dir/skipped_samples.jsonl` and logs them, and every rank takes the same count and the same
    decision to stop. Samples already listed there (a resumed run) count as seen: a restart neither lists
    nor counts a sample twice.
    """

    def __init__(self, output_dir: str, dataset_size: int, max_fraction: float, rank: int = 0):
        self.path = os.path.join(output_dir, SKIPPED_FILE)
        self.dataset_size = dataset_size
        self.max_fraction = max_fraction
        self.rank = rank
        self._seen: set[int] = set(_listed_indices(self.path))
        self._noted: dict[int, dict] = {}
        if self._seen:
            logger.info("%d skipped samples already listed in %s", len(self._seen), self.path)

    @property
    def count(self) -> int:
        return len(self._seen)

    def note(self, skipped: list[dict]) -> None:
        """Skip records of this rank's batch (from the collator), counted at the next `sync`."""
        for item in skipped:
            if item["index"] not in self._seen:
                self._noted.setdefault(item["index"], {**item, "rank": self.rank})

    def sync(self, device=None) -> None:
        """Counts what every rank noted since the last call. A collective where several ranks run: every
        rank calls it at the same point. Raises SkipLimitExceeded on every rank past the limit."""
        new = {}
        for item in _gather_from_ranks(list(self._noted.values()), device):
            if item["index"] not in self._seen:
                new.setdefault(item["index"], item)
        self._noted.clear()
        if not new:
            return
        if self.rank == 0:
            self._list(sorted(new.values(), key=lambda item: item["index"]))
        self._seen |= new.keys()
        share = self.count / max(self.dataset_size, 1)
        if share > self.max_fraction:
            raise SkipLimitExceeded(
                f"{self.count} of {self.dataset_size} samples ({share:.1%}) could not be read, more than the "
                f"allowed {self.max_fraction:.1%}; fix or remove them, or raise the limit (e.g. "
                f"--max_skip_fraction {min(1.0, 2 * share):.2f}) ({self.path})"
            )

    def _list(self, items: list[dict]) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        cut_short = _ends_mid_line(self.path)
        with open(self.path, "a", encoding="utf-8") as f:
            if cut_short:  # a crash cut the last line short: start a new one
                f.write("\n")
            for item in items:
                logger.warning(
                    "skipping sample %r (#%d, %s): %s", item["id"], item["index"], item["path"], item["reason"]
                )
                entry = {key: item[key] for key in ("index", "id", "path", "reason", "rank")}
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _listed_indices(path: str) -> list[int]:
    """Indices listed in a skipped_samples.jsonl; a line cut short by a crash is left out (its sample is
    listed again when met again)."""
    if not os.path.isfile(path):
        return []
    indices = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                indices.append(int(json.loads(line)["index"]))
            except (ValueError, KeyError, TypeError):
                continue
    return indices


def _ends_mid_line(path: str) -> bool:
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _gather_from_ranks(items: list[dict], device) -> list[dict]:
    """Every rank's `items`, on every rank; with one process, `items`."""
    if not is_distributed():
        return items
    total = torch.tensor([len(items)], dtype=torch.long, device=device)
    dist.all_reduce(total)
    if int(total.item()) == 0:  # the usual case: nothing skipped anywhere, nothing more to send
        return []
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for rank_items in gathered for item in rank_items]
