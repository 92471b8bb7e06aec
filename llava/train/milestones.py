"""BabyLM-style checkpoints by words seen.

Words are those of the answer text actually trained: the label tokens of each batch (prompts, visual
positions, padding and skipped samples carry none), decoded without special tokens and split on
whitespace, coordinates left out (llava/data/words.py), summed over every rank at each optimizer step.
The count is saved in every checkpoint and read back on resume, so a resumed run crosses each milestone
at the same step as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from ..constants import IGNORE_INDEX
from ..data.words import words_of_ids
from ..errors import UsageError

logger = logging.getLogger(__name__)

WORD_COUNT_FILE = "word_count.json"


def babylm_milestones() -> list[int]:
    """Every 1M words up to 10M, every 10M up to 100M, every 100M up to 1B."""
    million = 1_000_000
    return (
        [i * million for i in range(1, 11)]
        + [i * 10 * million for i in range(2, 11)]
        + [i * 100 * million for i in range(2, 11)]
    )


def milestone_label(words: int) -> str:
    for unit, suffix in ((1_000_000_000, "B"), (1_000_000, "M")):
        if words % unit == 0:
            return f"{words // unit}{suffix}"
    return str(words)


def parse_milestones(babylm: bool, custom: str | None) -> list[int]:
    milestones = set(babylm_milestones() if babylm else [])
    if custom:
        try:
            milestones |= {int(float(w)) for w in custom.split(",") if w.strip()}
        except ValueError as e:
            raise UsageError(f"--word_milestones takes comma-separated word counts, got {custom!r}") from e
    if any(m <= 0 for m in milestones):
        raise UsageError(f"--word_milestones must be positive word counts, got {custom!r}")
    return sorted(milestones)


def count_words(labels: torch.Tensor, tokenizer) -> int:
    """Words of the trained answer text in a batch of labels (coordinates are not words: data/words.py)."""
    rows = [row[row != IGNORE_INDEX].tolist() for row in labels]
    return words_of_ids([ids for ids in rows if ids], tokenizer)


def read_word_count(checkpoint: str) -> int:
    path = os.path.join(checkpoint, WORD_COUNT_FILE)
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["words"])


def write_word_count(checkpoint: str, words: int) -> None:
    """Written whole or not at all (a temporary file renamed into place): the file marks a milestone (or
    the final model) ready for its evaluator, which may read it at any moment (see milestone_eval.py)."""
    path = os.path.join(checkpoint, WORD_COUNT_FILE)
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump({"words": words}, f)
    os.replace(partial, path)


def remove_word_count(folder: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(folder, WORD_COUNT_FILE))


class WordMilestoneCallback(TrainerCallback):
    """Adds each step's words (summed over ranks) to the trainer's count, saves a checkpoint named after
    every milestone crossed, and stops the run at `max_words`."""

    def __init__(self, trainer, milestones: list[int], max_words: int | None):
        self.trainer = trainer
        self.milestones = milestones
        self.max_words = max_words

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        pending = torch.tensor([trainer.pending_words], dtype=torch.long, device=args.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(pending)
        before = trainer.words_seen
        trainer.words_seen += int(pending.item())
        trainer.pending_words = 0
        for milestone in self.milestones:
            if before < milestone <= trainer.words_seen:
                trainer.save_milestone(milestone_label(milestone))
        if self.max_words is not None and trainer.words_seen >= self.max_words:
            logger.info("reached --max_words %d (%d words seen): stopping", self.max_words, trainer.words_seen)
            control.should_training_stop = True
            control.should_save = True
        return control
