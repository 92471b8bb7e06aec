"""Compute the frozen tower's features of every clip and image of a data set once:
`python -m llava.train.cache_features --feature_cache DIR` plus the training run's data and tower flags.

    python -m llava.train.cache_features \\
        --model_name_or_path ./models/bambi-gpt2-italian --vision_tower facebook/dinov2-large \\
        --data_path data/train_video.json --video_folder data/videos --num_frames 8 \\
        --feature_cache cache/features

Then train with the same command plus `--feature_cache cache/features`. The tower is the one training
would use: a llava checkpoint's own (`--model_name_or_path` of a saved run), otherwise `--vision_tower`.
Flags of the training command that concern neither the data nor the tower are accepted and ignored, so
the training command line can be reused as it is. Clips already in the cache are not computed again;
unreadable ones are listed and left to training, which skips them. Under torchrun each process takes
its share of the clips (on its own GPU where there are GPUs) and writes its own shards.

The loop keeps the tower busy: clips are decoded ahead of it (in --dataloader_num_workers processes, or a
thread where that is 0), the frames of --clips_per_batch clips go through it in one call, and a thread
of its own stores what comes out (the 16-bit conversion, the checksums, the shards written and flushed to
disk) while it encodes the next batch. The last log line, and `run`'s result, set the loop's rate beside
the tower's own (its time inside the forward), and the set-up's seconds apart.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm
from transformers import AutoConfig, HfArgumentParser

from .. import errors
from ..data.dataset import media_path
from ..data.media import MediaReadError, load_pixels
from ..data.samples import load_samples
from ..data.video import VideoReadError
from ..model.model_folder import check_model_folder
from ..modeling.vision_settings import VisionSettings
from ..modeling.vision_tower import VisionTower, load_vision_tower_from_checkpoint
from .arguments import DataArguments, settings_of
from .feature_cache import FeatureCache
from .preflight import check_tower

logger = logging.getLogger("llava.cache_features")


@dataclass
class CacheArguments:
    """The caching's own settings; the tower, its layer and the frame count are the training's
    (VisionSettings: the tower is used unless --model_name_or_path brings its own), and so is the data
    (DataArguments)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The training run's model: a saved llava checkpoint brings its own tower."}
    )
    clips_per_batch: int = field(default=8, metadata={"help": "Clips per tower forward."})
    dataloader_num_workers: int = field(default=min(4, os.cpu_count() or 1), metadata={"help": "Decoding processes."})
    device: str | None = field(
        default=None, metadata={"help": "Where the tower runs (default: this process's GPU, else the CPU)."}
    )
    bf16: bool = field(
        default=False, metadata={"help": "Run the tower in bfloat16 (the stored features are 16-bit either way)."}
    )
    shard_size_mb: int = field(default=1024, metadata={"help": "Size of each safetensors shard."})
    seed: int = field(
        default=42,
        metadata={"help": "As in training (transformers' default 42): picks the random:N samples of a YAML mixture."},
    )


def load_tower(args: CacheArguments, vision: VisionSettings) -> VisionTower:
    """The tower a training run with the same flags would use."""
    if args.model_name_or_path:
        import llava.model  # noqa: F401  (registers the llava configs)

        check_model_folder(
            args.model_name_or_path, "--model_name_or_path"
        )  # one line for a wrong path, not a hub error
        config = AutoConfig.from_pretrained(args.model_name_or_path)
        recorded = VisionSettings.from_config(config)
        if recorded.vision_tower:
            if vision.vision_tower:
                logger.info(
                    "the checkpoint brings its own tower (%s); --vision_tower is not used, as in training",
                    recorded.vision_tower,
                )
            return load_vision_tower_from_checkpoint(args.model_name_or_path, config)
    if not vision.vision_tower:
        raise errors.UsageError("name the tower: --vision_tower, or a saved llava checkpoint as --model_name_or_path")
    check_tower(vision.vision_tower)  # one line for a wrong path, not a hub error
    return VisionTower.from_pretrained(vision.vision_tower, vision.mm_vision_select_layer)


class _Media(Dataset):
    """(modality, path) pairs -> pixels, or the reason they cannot be read."""

    def __init__(self, media: list[tuple[str, str, str]], num_frames: int, image_processor):
        self.media, self.num_frames, self.image_processor = media, num_frames, image_processor

    def __len__(self) -> int:
        return len(self.media)

    def __getitem__(self, index: int):
        modality, path, key = self.media[index]
        try:
            return path, key, load_pixels(modality, path, self.num_frames, self.image_processor), None
        except (VideoReadError, MediaReadError) as e:
            return path, key, None, str(e)


def _media_of(data_args: DataArguments, seed: int) -> list[tuple[str, str]]:
    """Distinct (modality, path) of the data set, in file order (a mixture's random draws as training's)."""
    seen, media = set(), []
    for sample in load_samples(data_args.data_path, seed):
        if not sample["modality"]:
            continue
        path = media_path(sample, data_args)
        if (sample["modality"], path) not in seen:
            seen.add((sample["modality"], path))
            media.append((sample["modality"], path))
    return media


def _device(args: CacheArguments) -> torch.device:
    if args.device:
        return torch.device(args.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _read_ahead(items, depth: int):
    """Yields `items`, produced up to `depth` ahead by a thread of their own: with --dataloader_num_workers 0,
    the next batch's clips are decoded while the tower encodes this one (both release the GIL). An error
    in that thread is raised here; a consumer that stops early stops the thread."""
    ready, stop, end = queue.Queue(maxsize=depth), threading.Event(), object()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((end, None))
        except BaseException as e:  # raised in the consumer's thread
            offer((end, e))

    thread = threading.Thread(target=produce, name="clip-decoding", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _ShardWriter:
    """`FeatureCache.add` (the 16-bit conversion, the checksum) and the shard writes, in a thread of their own,
    so that the tower encodes the next batch meanwhile. The cache is this thread's alone until `close`. Grids
    waiting for it are bounded to `shard_bytes` of tensors, so the tower can go on while a whole shard is
    written. The thread's failure (a full disk: errors.saving's one line) is raised in the caller, at its
    next `add` or at `close`, and nothing more is written after it."""

    def __init__(self, cache: FeatureCache, shard_bytes: int):
        self.cache, self.shard_bytes = cache, shard_bytes
        self._waiting: collections.deque = collections.deque()
        self._held = 0  # bytes of the grids handed over and not yet in the cache's own queue
        self._closed, self._flush_at_end, self._error = False, True, None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="feature-cache-writer", daemon=True)
        self._thread.start()

    def add(self, key: str, grid: torch.Tensor, path: str) -> None:
        size = grid.numel() * grid.element_size()
        with self._changed:
            while self._error is None and self._held and self._held + size > self.shard_bytes:
                self._changed.wait()
            if self._error is not None:
                raise self._error
            self._waiting.append((key, grid, path, size))
            self._held += size
            self._changed.notify_all()

    def close(self) -> None:
        """Writes the last shard and waits for it; raises the thread's error, if any."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """After a failure elsewhere: a shard being written is finished, the entries not written yet are
        dropped (as when the loop ran in one thread)."""
        with self._changed:
            self._closed, self._flush_at_end = True, False
            self._waiting.clear()
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._waiting and not self._closed:
                        self._changed.wait()
                    if not self._waiting:
                        flush = self._flush_at_end
                        break
                    key, grid, path, size = self._waiting.popleft()
                self.cache.add(key, grid, path, self.shard_bytes)
                del grid
                with self._changed:
                    self._held -= size
                    self._changed.notify_all()
            if flush:
                self.cache.flush()
        except BaseException as e:  # raised in the caller's thread
            with self._changed:
                self._error = e
                self._waiting.clear()
                self._changed.notify_all()


def run(args: CacheArguments, vision: VisionSettings, data_args: DataArguments) -> dict:
    """Caches every medium of the data set not cached yet. Returns counts, and seconds: `setup_seconds`
    (reading the data file, loading the tower, its weights' digest, hashing the media files), `loop_seconds`
    (decoding, the tower, the shards written and on disk) and `tower_seconds` (the part of the loop spent in
    the tower's forward), so that the loop's rate can be set beside the tower's own."""
    setup_start = time.perf_counter()
    if not data_args.feature_cache:
        raise errors.UsageError("--feature_cache DIR is required: the folder the features are written to")
    if not data_args.data_path:
        raise errors.UsageError("--data_path is required")
    # Before the tower is loaded and any clip decoded: a folder that cannot be written fails now.
    errors.check_writable(data_args.feature_cache, "--feature_cache folder")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    media = _media_of(data_args, args.seed)[rank::world]  # the data file is read (and checked) before the tower loads
    tower = load_tower(args, vision).eval().requires_grad_(False)
    cache = FeatureCache(data_args.feature_cache, tower)
    device = _device(args)
    tower.to(device=device, dtype=torch.bfloat16 if args.bf16 else torch.float32)

    todo, unreadable = [], []
    for modality, path in media:
        key = cache.key_for(modality, path, vision.num_frames)
        if key is None:
            unreadable.append((path, "file cannot be opened"))
        elif key not in cache:
            todo.append((modality, path, key))
    present = len(media) - len(todo) - len(unreadable)
    logger.info(
        "%d media for this process: %d cached already, %d to compute on %s; cache namespace %s",
        len(media),
        present,
        len(todo),
        device,
        cache.folder,
    )

    loader = DataLoader(
        _Media(todo, vision.num_frames, tower.image_processor),
        batch_size=None,  # items as they are; their frames are joined into tower batches below
        num_workers=args.dataloader_num_workers,
    )
    shard_bytes = args.shard_size_mb << 20
    computed, batch, tower_seconds = 0, [], 0.0

    def encode(batch):
        nonlocal tower_seconds
        frames = torch.cat([pixels for _, _, pixels in batch]).to(device=device, dtype=tower.dtype)
        start = time.perf_counter()
        with torch.inference_mode():
            grids = tower(frames)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # the tower's time, not that of launching its kernels
        tower_seconds += time.perf_counter() - start
        for (path, key, _), grid in zip(batch, grids.split([len(pixels) for _, _, pixels in batch])):
            writer.add(key, grid, path)

    loop_start = time.perf_counter()
    setup_seconds = loop_start - setup_start
    writer = _ShardWriter(cache, shard_bytes)
    read_ahead = _read_ahead(loader, depth=args.clips_per_batch) if args.dataloader_num_workers == 0 else None
    try:
        decoded = loader if read_ahead is None else read_ahead
        for path, key, pixels, error in tqdm(decoded, total=len(todo), desc="caching features", disable=rank != 0):
            if error is not None:
                logger.warning("cannot read %s: %s", path, error)
                unreadable.append((path, error))
                continue
            batch.append((path, key, pixels))
            computed += 1
            if len(batch) == args.clips_per_batch:
                encode(batch)
                batch = []
        if batch:
            encode(batch)
    except BaseException:
        writer.abandon()
        raise
    finally:
        if read_ahead is not None:
            read_ahead.close()  # its thread stops now, not when the generator is collected
    writer.close()
    loop_seconds = time.perf_counter() - loop_start
    logger.info(
        "cached %d new media in %.1f s: %.2f per second, the tower alone %.2f per second (%.1f s of the loop); "
        "set-up %.1f s; %d were cached already; %d unreadable%s",
        computed,
        loop_seconds,
        computed / max(loop_seconds, 1e-9),
        computed / max(tower_seconds, 1e-9),
        tower_seconds,
        setup_seconds,
        present,
        len(unreadable),
        " (listed above; training skips them)" if unreadable else "",
    )
    return {
        "computed": computed,
        "present": present,
        "unreadable": len(unreadable),
        "namespace": cache.namespace,
        "setup_seconds": setup_seconds,
        "loop_seconds": loop_seconds,
        "tower_seconds": tower_seconds,
    }


class _ArgumentParser(errors.OneLineArgumentErrors, HfArgumentParser):
    pass


def main(argv: list[str] | None = None) -> dict:
    parser = _ArgumentParser(
        (CacheArguments, VisionSettings, DataArguments),
        prog="python -m llava.train.cache_features",
        description="Takes the training's command line, --config RECIPE included.",
    )
    # The training's settings as the training reads them: recipe, legacy flags, --bf16 auto, ...
    settings = settings_of(list(sys.argv[1:] if argv is None else argv))
    if settings.refusal is not None:
        raise settings.refusal
    args, vision, data_args, ignored = parser.parse_args_into_dataclasses(
        args=settings.tokens(), return_remaining_strings=True
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True)
    if ignored:
        logger.info("training flags not used for caching: %s", " ".join(a for a in ignored if a.startswith("--")))
    return run(args, vision, data_args)


# The command line: an expected failure (a missing data file, a full or read-only --feature_cache
# folder) ends in one line `error: ...`; main itself raises, for callers in Python.
cli = errors.entry_point(main)

if __name__ == "__main__":
    cli()
