"""Complete checkpoints only: a checkpoint folder counts once a marker is written after everything in it.

The Trainer writes `checkpoint-N` in several steps (model, optimizer shards of every rank, scheduler,
RNG, trainer state). A process killed half-way leaves a folder that looks like a checkpoint; the marker,
written last and after a barrier across ranks, is what tells a complete one apart.
"""

from __future__ import annotations

import logging
import os
import re
import shutil

import torch.distributed as dist

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "checkpoint_complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _checkpoints(output_dir: str) -> list[tuple[int, str]]:
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def is_complete(checkpoint: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint, COMPLETE_MARKER))


def newest_complete_checkpoint(output_dir: str) -> str | None:
    complete = [path for _, path in _checkpoints(output_dir) if is_complete(path)]
    return complete[-1] if complete else None


def remove_incomplete_checkpoints(output_dir: str) -> list[str]:
    """Deletes checkpoint folders without the marker (a save cut short), so none is resumed from or
    half-overwritten later. Call on the main process only."""
    removed = []
    for _, path in _checkpoints(output_dir):
        if not is_complete(path):
            logger.warning("removing incomplete checkpoint %s (its save never finished)", path)
            shutil.rmtree(path)
            removed.append(path)
    return removed


def mark_complete(checkpoint: str, step: int) -> None:
    """Writes the marker once every rank has finished its part of the save (call on all ranks)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    if (not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0) and os.path.isdir(checkpoint):
        with open(os.path.join(checkpoint, COMPLETE_MARKER), "w") as f:
            f.write(f"{step}\n")
            f.flush()
            os.fsync(f.fileno())


def rotate(output_dir: str, keep: int | None) -> None:
    """Keeps the newest `keep` complete checkpoints (older ones are deleted only after a newer one is
    complete, so a kill at any moment leaves at least one). Call on the main process only."""
    if not keep:
        return
    complete = [path for _, path in _checkpoints(output_dir) if is_complete(path)]
    for path in complete[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
