"""A store of frozen vision-tower features, so that repeated epochs skip decoding and the tower.

What is stored, per clip or image, is exactly what the online path feeds the resampler: the tower's
patch-token grid of the selected layer, CLS and registers dropped, `(T, grid, grid, hidden)`, computed
from the same frames (`read_video_frames`) and the same image processor as training. It is kept in
16-bit: float16, or bfloat16 for the rare grid whose values overflow float16.

Keys. A cache folder holds one sub-folder per *tower namespace*: a digest of the tower's architecture,
its weights, the selected layer, the image processor's settings and the frame-sampling rule, so that a
cache made for one tower is never read for another. Inside it an entry is named by the medium's
modality, its frame count and a digest of the file's bytes, so a re-encoded or replaced clip is a new
entry. The weights digest is taken over the weights rounded to bfloat16: a tower loaded in float32 and
the same tower loaded in bfloat16 (ZeRO-3 runs) share one namespace, while a fine-tuned tower does not.

Layout. Entries live in safetensors shards written atomically (a temporary name, flushed to disk, then
a rename), read back memory-mapped one tensor at a time; each shard's metadata lists the files it was
made from (path, size, modification time, digest), so a training run recognizes unchanged files by
`stat` and hashes only files it has not seen. Several processes can add shards to one namespace at
once (distinct names).

Damage. A shard's metadata also holds the CRC-32 of every entry's bytes. An entry is checked against it
on its first read in a training run, by whichever process reads it first (a DataLoader worker, as a
rule); the outcome is kept in one byte per entry in shared memory, made when the cache is indexed and
inherited by the forked workers, so that one worker's check counts for every worker and every later
epoch, whether or not the workers persist. Measured on this project's 2-core machine, for a 4 MiB entry
of the seed config: the CRC takes about 1.0 ms (1.5 ms with the other core busy), a read without it (a
memory-mapped view, no copy) about 0.01 ms; so the first epoch pays about 1 ms per entry, spent in the
DataLoader workers, and later epochs nothing (the seed config's cached training step on the CPU takes
1.1 s per batch of 2, docs/benchmarks.md). Damage that reaches an entry after its first read in a run is
found by the next run.
A shard that cannot be opened (cut short, a damaged header) is reported when the cache is indexed and
its entries are left out; an entry whose bytes do not match is reported when first read, and `load`
returns None for it from then on, in every process. Either way the samples take the online path
(decoding and the tower), and each damaged shard is named once per training process (its DataLoader
workers and later epochs included). Shards written before checksums existed are read as before,
unverified, with one warning: they hold hours of tower time, and damage is rare; deleting them and
running cache_features again computes them anew, with checksums.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import json
import logging
import multiprocessing
import os
import uuid

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import errors
from ..modeling.vision_tower import tower_architecture
from .durable_files import CHECKSUM, checksum, fsync_folder, replace_durably, write_durably

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# The rule by which frames are picked from a clip (llava.modeling.frame_sampling.sample_indices); part of the
# namespace.
FRAME_SAMPLING = "segment-centres"
MANIFEST = "manifest.json"
SHARD_GLOB = "shard-*.safetensors"
_FLOAT16_MAX = torch.finfo(torch.float16).max
# An entry's checksum state (FeatureCache._intact).
UNCHECKED, INTACT, DAMAGED = 0, 1, 2


def _digest(chunks) -> str:
    h = hashlib.blake2b(digest_size=16)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def file_digest(path: str) -> str:
    """Digest of a file's bytes."""

    def chunks():
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                yield block

    return _digest(chunks())


def weights_digest(tower) -> str:
    """Digest of the tower's weights rounded to bfloat16 (see the module docstring), gathered first
    where ZeRO-3 partitioned them."""
    from ..modeling.zero3 import gathered_parameters

    with gathered_parameters(tower):
        state = tower.state_dict()
        # Name, shape and values of each tensor, in turn; the values are hashed where they lie (no bytes
        # copies: measured, a third of the time for a DINOv2-large).
        return _digest(
            chunk
            for name, t in sorted(state.items())
            for chunk in (
                name.encode(),
                bytes(str(tuple(t.shape)), "ascii"),
                t.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy(),
            )
        )


def describe_tower(tower) -> dict:
    """Everything about a tower that changes its features, as JSON-ready values."""
    processor = tower.image_processor.to_dict()
    processor.pop("processor_class", None)
    return {
        "format": FORMAT_VERSION,
        "frame_sampling": FRAME_SAMPLING,
        "tower": tower_architecture(tower.config.to_dict()),
        "select_layer": tower.select_layer,
        "image_processor": json.loads(json.dumps(processor)),
        "weights": weights_digest(tower),
    }


def entry_key(modality: str, num_frames: int, content_digest: str) -> str:
    frames = num_frames if modality == "video" else 1
    return f"{modality}-{frames}-{content_digest}"


def entry_checksum(grid: torch.Tensor) -> int:
    """CRC-32 of the entry's bytes as they lie in the shard (safetensors stores raw little-endian data)."""
    return checksum(grid.contiguous().reshape(-1).view(torch.uint8).numpy())


def to_16bit(grid: torch.Tensor) -> torch.Tensor:
    """float16 keeps 3 more mantissa bits than bfloat16; bfloat16 only where float16 would overflow.
    Checked and converted on the grid's own device (on a GPU, microseconds), then copied to the CPU at
    half the size; the range is read with one pass (aminmax), without an absolute-value copy."""
    grid = grid.detach()
    if grid.dtype != torch.float16:
        low, high = torch.aminmax(grid)
        fits = max(-float(low), float(high)) <= _FLOAT16_MAX  # False for NaN, as the comparison is
        grid = grid.to(torch.float16 if fits else torch.bfloat16)
    return grid.to("cpu").contiguous()


# Shard files opened for reading in this process, by path: memory maps, opened once per process (forked
# DataLoader workers open their own).
_open_shards: dict[str, object] = {}
_open_shards_pid: int | None = None


def read_entry(shard: str, key: str) -> torch.Tensor:
    """One entry of a shard, as a view of the shard's memory map (no copy; ~0.01 ms)."""
    global _open_shards, _open_shards_pid
    if _open_shards_pid != os.getpid():
        _open_shards, _open_shards_pid = {}, os.getpid()
    handle = _open_shards.get(shard)
    if handle is None:
        handle = _open_shards[shard] = safe_open(shard, framework="pt")
    return handle.get_tensor(key)


def _entry_from(shard: str, key: str) -> torch.Tensor:
    """A GridFromShard unpickled: the entry, read in the receiving process (checked by the sender)."""
    try:
        return read_entry(shard, key)
    except (SafetensorError, OSError) as e:
        raise errors.InputError(f"feature cache shard {shard} went away during training: entry {key} ({e})") from None


class GridFromShard:
    """A checked cache entry on its way from a DataLoader worker to the training process: pickled as its
    shard and key, unpickled as the entry itself, a view of the receiving process's own memory map. A
    worker that sent the tensor would copy it into a new shared-memory segment, 3.3 ms per 4 MiB entry of
    the seed config on the CPU, measured (page faults of fresh memory), several times the rest of the
    sample's loading; this sends a few bytes."""

    __slots__ = ("shard", "key")

    def __init__(self, shard: str, key: str):
        self.shard, self.key = shard, key

    def __reduce__(self):
        return (_entry_from, (self.shard, self.key))


class FeatureCache:
    """One tower's namespace inside a cache folder: lookup, memory-mapped reads, and shard writing."""

    def __init__(self, root: str, tower, description: dict | None = None):
        self.root = root
        self.description = description or describe_tower(tower)
        self.namespace = _digest([json.dumps(self.description, sort_keys=True).encode()])[:20]
        self.folder = os.path.join(root, self.namespace)
        self.expected_grid = (tower.grid_size, tower.grid_size, tower.hidden_size)
        self._shard_of: dict[str, str] = {}  # entry key -> shard file
        self._checksum_of: dict[str, int] = {}  # entry key -> CRC-32 of its bytes (absent in old shards)
        self._known_files: dict[str, tuple[int, int, str]] = {}  # real path -> (size, mtime_ns, digest)
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_checksums: dict[str, str] = {}
        self._pending_sources: list[list] = []
        self._pending_bytes = 0
        shards = sorted(glob.glob(os.path.join(self.folder, SHARD_GLOB)))
        # One flag per shard in shared memory, inherited by forked DataLoader workers: a damaged shard
        # is named once, not once per worker and epoch.
        self._shard_number = {shard: i for i, shard in enumerate(shards)}
        self._reported = multiprocessing.Array(ctypes.c_bool, max(len(shards), 1))
        self._reported_here: set[str] = set()  # shards written after indexing
        self._read_shard_headers(shards)
        # Whether each entry with a checksum was found intact (UNCHECKED until its first read): one byte
        # per entry in shared memory, inherited by forked DataLoader workers like the flags above, so an
        # entry is checked once per training run, not once per worker and epoch. Unlocked: a byte is
        # written whole, and two processes that check the same entry at once reach the same outcome.
        self._slot_of = {key: slot for slot, key in enumerate(self._checksum_of)}
        self._state = multiprocessing.Array(ctypes.c_uint8, max(len(self._slot_of), 1), lock=False)
        self._state_here: dict[str, int] = {}  # entries written after indexing: per process

    # ----------------------------------------------------------------------------------- reading
    def _read_shard_headers(self, shards: list[str]) -> None:
        """Indexes every shard from its header (cheap: no tensor data). A shard that cannot be opened is
        reported and left out: its samples take the online path."""
        unverified = []
        for shard in shards:
            try:
                with safe_open(shard, framework="pt") as f:
                    keys = list(f.keys())
                    metadata = f.metadata() or {}
                sources = json.loads(metadata.get("sources", "[]"))
                checksums = None
                if "checksums" in metadata:
                    checksums = {key: int(value, 16) for key, value in json.loads(metadata["checksums"]).items()}
                    if metadata.get("checksum") != CHECKSUM or set(checksums) != set(keys):
                        raise ValueError("its checksums do not list its entries")
            except (SafetensorError, OSError, ValueError) as e:
                self._report(shard, f"it cannot be read ({e})")
                continue
            for key in keys:
                if key in self._shard_of:
                    continue
                self._shard_of[key] = shard
                if checksums is not None:
                    self._checksum_of[key] = checksums[key]
            if checksums is None:
                unverified.append(shard)
            for path, size, mtime_ns, digest in sources:
                self._known_files[path] = (size, mtime_ns, digest)
        if unverified:
            logger.warning(
                "feature cache %s: %d of %d shards were written without checksums (e.g. %s); their entries are read "
                "unverified. Delete them and run `python -m llava.train.cache_features` again to have them computed "
                "with checksums",
                self.folder,
                len(unverified),
                len(shards),
                os.path.basename(unverified[0]),
            )

    def _report(self, shard: str, what: str) -> None:
        """Names a damaged shard, once per training process (its DataLoader workers and epochs included)."""
        number = self._shard_number.get(shard)
        if number is None:
            if shard in self._reported_here:
                return
            self._reported_here.add(shard)
        else:
            with self._reported.get_lock():
                if self._reported[number]:
                    return
                self._reported[number] = True
        logger.warning(
            "damaged feature cache shard %s: %s; its samples take the online path (decoding and the tower); "
            "delete it and run `python -m llava.train.cache_features` again to compute them anew",
            shard,
            what,
        )

    def __contains__(self, key: str) -> bool:
        return key in self._shard_of

    def content_digest(self, path: str) -> str:
        """The file's digest: from the shards' records where size and modification time still match,
        else by reading the file."""
        real = os.path.realpath(path)
        stat = os.stat(real)
        known = self._known_files.get(real)
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        digest = file_digest(real)
        self._known_files[real] = (stat.st_size, stat.st_mtime_ns, digest)
        return digest

    def key_for(self, modality: str, path: str, num_frames: int) -> str | None:
        """The entry key of a medium, or None where the file cannot be read (the online path then
        reports it)."""
        try:
            return entry_key(modality, num_frames, self.content_digest(path))
        except OSError:
            return None

    def load(self, key: str, for_another_process: bool = False) -> torch.Tensor | GridFromShard | None:
        """The stored grid `(T, grid, grid, hidden)` in its 16-bit dtype, its checksum checked on its first
        read; None where the entry is damaged (its shard is reported; the sample takes the online path).
        `for_another_process` (a DataLoader worker's read): the checked entry as a `GridFromShard`, which
        crosses to the training process as its shard and key and is read there."""
        shard = self._shard_of[key]
        try:
            grid = read_entry(shard, key)
        except (SafetensorError, OSError) as e:
            self._report(shard, f"entry {key} cannot be read ({e})")
            return None
        if not self._intact(key, grid):
            self._report(shard, f"entry {key} does not match its checksum (and maybe others)")
            return None
        return GridFromShard(shard, key) if for_another_process else grid

    def _intact(self, key: str, grid: torch.Tensor) -> bool:
        """Whether the entry's bytes match its checksum, computed on its first read in this process tree
        (see the module docstring); True for an entry of a shard without checksums."""
        expected = self._checksum_of.get(key)
        if expected is None:
            return True
        slot = self._slot_of.get(key)
        state = self._state[slot] if slot is not None else self._state_here.get(key, UNCHECKED)
        if state == UNCHECKED:
            state = INTACT if entry_checksum(grid) == expected else DAMAGED
            if slot is not None:
                self._state[slot] = state
            else:
                self._state_here[key] = state
        return state == INTACT

    def other_namespaces(self) -> list[str]:
        """Namespaces in the same cache folder that belong to other towers or settings."""
        found = glob.glob(os.path.join(self.root, "*", MANIFEST))
        return sorted(os.path.basename(os.path.dirname(p)) for p in found if os.path.dirname(p) != self.folder)

    # ----------------------------------------------------------------------------------- writing
    def add(self, key: str, grid: torch.Tensor, source_path: str, shard_bytes: int) -> None:
        """Queues one entry; a shard is written once `shard_bytes` are queued (and at `flush`)."""
        if tuple(grid.shape[1:]) != self.expected_grid:
            raise ValueError(f"feature grid {tuple(grid.shape)} does not fit this tower's (T, {self.expected_grid})")
        if key in self._shard_of or key in self._pending:
            return
        grid = to_16bit(grid)
        self._pending[key] = grid
        self._pending_checksums[key] = f"{entry_checksum(grid):08x}"
        real = os.path.realpath(source_path)
        size, mtime_ns, digest = self._known_files[real]
        self._pending_sources.append([real, size, mtime_ns, digest])
        self._pending_bytes += grid.numel() * grid.element_size()
        if self._pending_bytes >= shard_bytes:
            self.flush()

    def flush(self) -> str | None:
        """Writes the queued entries as one shard; returns its path."""
        if not self._pending:
            return None
        name = f"shard-{uuid.uuid4().hex[:16]}.safetensors"
        final = os.path.join(self.folder, name)
        partial = os.path.join(self.folder, f".{name}.partial")
        metadata = {
            "sources": json.dumps(self._pending_sources),
            "checksum": CHECKSUM,
            "checksums": json.dumps(self._pending_checksums),
        }
        # The shard's size: its tensors, its metadata, and a generous allowance for the header's own JSON.
        needed = self._pending_bytes + sum(map(len, metadata.values())) + 256 * len(self._pending)
        with errors.saving(self.folder, "a feature cache shard", needed=needed):
            try:
                os.makedirs(self.folder, exist_ok=True)
                self._write_manifest()
                save_file(self._pending, partial, metadata=metadata)
                replace_durably(partial, final)  # readers never see a half-written or unflushed shard
            except Exception:
                # A shard cut short keeps its hidden temporary name (no reader looks at it); it goes, so
                # that the space it took is free again and counted as free in the message.
                with contextlib.suppress(OSError):
                    os.remove(partial)
                raise
        for key in self._pending:
            self._shard_of[key] = final
            self._checksum_of[key] = int(self._pending_checksums[key], 16)
        logger.info("wrote %d entries to %s", len(self._pending), final)
        self._pending, self._pending_checksums, self._pending_sources, self._pending_bytes = {}, {}, [], 0
        return final

    def _write_manifest(self) -> None:
        path = os.path.join(self.folder, MANIFEST)
        if os.path.isfile(path):
            return
        write_durably(path, json.dumps(self.description, indent=1, sort_keys=True))
        fsync_folder(self.root)  # the namespace folder's own name
