"""Complete, intact checkpoints only.

Complete: the Trainer writes `checkpoint-N` in several steps (model, optimizer shards of every rank,
scheduler, RNG, trainer state). A process killed half-way leaves a folder that looks like a checkpoint;
the marker, written last and after a barrier across ranks, is what tells a complete one apart.

Intact: the marker is also the checkpoint's manifest, every file with its size and CRC-32, recorded
once every file is flushed to disk (so a crash never leaves a marker before the data it vouches for).
A file cut short after that (a disk that filled up, a copy cut short) or whose bytes changed is found
on resume: the damaged checkpoint is named with what is wrong, set aside, and the run resumes from
the newest intact one. Markers written before manifests existed (just the step number) still resume,
unverified.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

import torch.distributed as dist

from .durable_files import CHECKSUM, file_checksum, fsync_file, fsync_folder, write_durably

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "checkpoint_complete"
# Damaged checkpoints are moved here, out of every `checkpoint-*` pattern (ours, the Trainer's rotation,
# anyone's glob), but kept: they are the evidence of what went wrong with the disk or the copy, and a
# multi-GB folder should not vanish on one bad read (a transient I/O error on a network filesystem
# would otherwise cost the run its checkpoint for good).
DAMAGED_FOLDER = "damaged_checkpoints"
DAMAGE_NOTE = "damage.txt"
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


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), 1


def is_complete(checkpoint: str) -> bool:
    return os.path.isfile(os.path.join(checkpoint, COMPLETE_MARKER))


def newest_marked_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint with its completion marker, not verified again (for naming it, as the run's
    summary line does; resuming uses newest_complete_checkpoint, which verifies)."""
    marked = [path for _, path in _checkpoints(output_dir) if is_complete(path)]
    return marked[-1] if marked else None


# ------------------------------------------------------------------------------------------ saving
def _files(checkpoint: str) -> list[str]:
    """Relative paths of the checkpoint's files (everything but the marker and partial files)."""
    found = []
    for folder, _, names in os.walk(checkpoint):
        for name in names:
            path = os.path.join(folder, name)
            if name == COMPLETE_MARKER or name.endswith(".partial") or not os.path.isfile(path):
                continue
            found.append(os.path.relpath(path, checkpoint))
    return sorted(found)


def _folders(checkpoint: str) -> list[str]:
    return [folder for folder, _, _ in os.walk(checkpoint)]


def mark_complete(checkpoint: str, step: int) -> None:
    """Flushes the checkpoint and writes its manifest as the completion marker, once every rank has
    finished its part of the save. Call on all ranks.

    Every rank flushes every file (cheap where it wrote nothing; where ranks sit on different nodes,
    each node's unwritten pages are its own to flush) and checksums its share of them; rank 0 writes
    the marker, itself flushed before it is renamed into place."""
    distributed = dist.is_available() and dist.is_initialized()
    if distributed:
        dist.barrier()
    rank, world = _rank_and_world()
    files = [_files(checkpoint) if rank == 0 and os.path.isdir(checkpoint) else None]
    if distributed:
        dist.broadcast_object_list(files, src=0)
    files = files[0]
    if files is None:  # nothing was saved here (e.g. the folder is not on this filesystem)
        return
    for rel in files:
        fsync_file(os.path.join(checkpoint, rel))
    for folder in _folders(checkpoint):
        fsync_folder(folder)
    share = {
        rel: [os.path.getsize(os.path.join(checkpoint, rel)), f"{file_checksum(os.path.join(checkpoint, rel)):08x}"]
        for rel in files[rank::world]
    }
    if distributed:
        shares = [None] * world
        dist.all_gather_object(shares, share)
    else:
        shares = [share]
    if rank != 0:
        return
    manifest = {
        "step": step,
        "checksum": CHECKSUM,
        "files": {rel: record for part in shares for rel, record in sorted(part.items())},
    }
    fsync_folder(os.path.dirname(os.path.abspath(checkpoint)))  # the checkpoint's own name
    write_durably(os.path.join(checkpoint, COMPLETE_MARKER), json.dumps(manifest, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------- resuming
def _read_manifest(checkpoint: str) -> tuple[dict | None, str | None]:
    """(manifest, None); (None, None) for a marker from before manifests; (None, problem) where the
    marker itself cannot be read."""
    try:
        with open(os.path.join(checkpoint, COMPLETE_MARKER), encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        return None, f"its completion marker {COMPLETE_MARKER} cannot be read ({e})"
    if text.strip().isdigit():
        return None, None
    try:
        manifest = json.loads(text)
        if manifest.get("checksum") != CHECKSUM or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"unknown checksum {manifest.get('checksum')!r}")
        return manifest, None
    except (ValueError, AttributeError) as e:
        return None, f"its completion marker {COMPLETE_MARKER} is damaged ({e})"


def damage(checkpoint: str) -> str | None:
    """What is wrong with a checkpoint marked complete, in one line; None where it is intact (or from
    before manifests, which cannot be checked)."""
    manifest, problem = _read_manifest(checkpoint)
    return problem if manifest is None else _damaged_files(checkpoint, manifest)


def _damaged_files(checkpoint: str, manifest: dict) -> str | None:
    """The manifest's files against the folder's. Sizes are compared first, so a file cut short is
    found without reading gigabytes."""
    problems = []
    for rel, (size, _) in manifest["files"].items():
        try:
            found = os.path.getsize(os.path.join(checkpoint, rel))
        except OSError:
            problems.append(f"{rel} is missing")
            continue
        if found != size:
            problems.append(f"{rel} is {found:,} bytes, {size:,} when saved" + (" (cut short)" if found < size else ""))
    if not problems:
        for rel, (_, expected) in manifest["files"].items():
            try:
                found = f"{file_checksum(os.path.join(checkpoint, rel)):08x}"
            except OSError as e:
                problems.append(f"{rel} cannot be read ({e.strerror})")
                continue
            if found != expected:
                problems.append(f"{rel} has other bytes than when saved ({CHECKSUM} {found}, saved {expected})")
    return "; ".join(problems) or None


def _set_aside(checkpoint: str, problem: str) -> str:
    """Moves a damaged checkpoint to DAMAGED_FOLDER with a note of what is wrong; returns where."""
    parent = os.path.join(os.path.dirname(checkpoint), DAMAGED_FOLDER)
    os.makedirs(parent, exist_ok=True)
    name, n = os.path.basename(checkpoint), 1
    target = os.path.join(parent, name)
    while os.path.exists(target):  # the same step damaged again, in a later attempt
        n += 1
        target = os.path.join(parent, f"{name}.{n}")
    os.rename(checkpoint, target)
    fsync_folder(os.path.dirname(checkpoint))
    with open(os.path.join(target, DAMAGE_NOTE), "w", encoding="utf-8") as f:
        f.write(problem + "\n")
    return target


def newest_complete_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint that is intact. Damaged ones are reported by path; rank 0 sets
    them aside.

    Every rank that calls this reaches the same answer without talking to the others: each verifies the
    same bytes the same way, newest first. A rank that looks while rank 0 is moving a damaged checkpoint
    away finds its files missing, which is damage too; only damaged checkpoints are ever moved."""
    rank, _ = _rank_and_world()
    complete = [path for _, path in _checkpoints(output_dir) if is_complete(path)]
    for path in reversed(complete):
        manifest, problem = _read_manifest(path)
        if manifest is None and problem is None:
            logger.info("%s has no manifest (saved before checkpoints recorded one): resuming from it unverified", path)
            return path
        problem = problem or _damaged_files(path, manifest)
        if problem is None:
            return path
        if rank != 0:
            logger.info("damaged checkpoint %s: %s (rank 0 sets it aside)", path, problem)
            continue
        try:
            where = f"set aside as {_set_aside(path, problem)}"
        except OSError as e:
            where = f"could not be set aside ({e})"
        logger.warning("damaged checkpoint %s: %s; %s; looking for an older one", path, problem, where)
    if complete and rank == 0:
        logger.warning("no intact checkpoint in %s: training starts from the beginning", output_dir)
    return None


def newest_complete_bytes(output_dir: str) -> int:
    """Bytes of the newest complete checkpoint in `output_dir` (0 where there is none): about what the
    next checkpoint save writes."""
    complete = [path for _, path in _checkpoints(output_dir) if is_complete(path)]
    if not complete:
        return 0
    total = 0
    for rel in _files(complete[-1]):
        try:
            total += os.path.getsize(os.path.join(complete[-1], rel))
        except OSError:  # removed meanwhile (rotation): an estimate either way
            pass
    return total


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


def rotate(output_dir: str, keep: int | None) -> None:
    """Keeps the newest `keep` complete checkpoints (older ones are deleted only after a newer one is
    complete, so a kill at any moment leaves at least one). Call on the main process only."""
    if not keep:
        return
    complete = [path for _, path in _checkpoints(output_dir) if is_complete(path)]
    for path in complete[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
