"""The data path alone, as a GPU would see it: the data loader driven with the training step replaced by
nothing, beside this machine's memory-copy bandwidth and what an H100 would consume at the seed's shapes.

On a GPU the cached step takes milliseconds, so what decides the run's wall time is whether the loader
delivers cache entries (4 MiB per clip at the seed's shapes) as fast as the GPU consumes them, and how
long each epoch waits for its first batch."""

from __future__ import annotations

import time

import torch

from .workload import Workload

# The recipe's batch (recipes/italian_video.yaml: per_device_train_batch_size; tests/test_bench.py checks
# that they agree). The workers are --workers, the recipe's by default.
RECIPE_BATCH = 8

# NVIDIA H100 SXM: dense BF16 tensor-core peak, 989.4 TFLOP/s (the data sheet's 1,979 counts 2:4
# sparsity). A small model's training step reaches a fraction of it: 40% is stated here as a
# well-tuned step's share (model FLOP utilization), not measured.
H100_BF16_DENSE_FLOPS = 989.4e12
H100_SHARE_OF_PEAK = 0.40

# Batches timed per epoch after its first (fewer online: decoding at the seed's shapes takes a tenth of a
# second per clip); epochs through one loader (its workers persist across them).
LOADER_BATCHES = {"cached": 48, "online": 12}
LOADER_EPOCHS = 3

GIB = float(1 << 30)
# The copy that measures this machine's memory: large enough that the CPU's caches cannot hold it.
COPY_BYTES = 256 << 20


def copy_bandwidth(threads: int, nbytes: int = COPY_BYTES, repeats: int = 5) -> float:
    """Bytes/s of one large copy into a buffer already allocated (the best of `repeats`), with `threads`
    torch threads: what this machine's memory moves."""
    source = torch.ones(nbytes, dtype=torch.uint8)
    target = torch.empty_like(source)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        target.copy_(source)  # pages touched once before timing
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            target.copy_(source)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return nbytes / best


def read_visual_inputs(batch: dict, staging: torch.Tensor) -> int:
    """Copies a collated batch's visual inputs (tower features, cached; pixels, online) into `staging`, as a
    host-to-device transfer reads them (a cached entry arrives as a view of the cache's memory map, whose
    bytes nothing has read yet); returns their bytes."""
    total = 0
    for item in batch["images"]:
        flat = _visual_tensor(item).contiguous().reshape(-1).view(torch.uint8)
        staging[: flat.numel()].copy_(flat)
        total += flat.numel()
    return total


def loader_alone(work: Workload, source: str, workers: int | None = None) -> dict:
    """The recipe's loader (batch, workers (default --workers), kept across epochs as training keeps them)
    iterated for LOADER_EPOCHS epochs, each batch's visual bytes read once and nothing else done: the
    seconds to each epoch's first batch, and clips/s and bytes/s after it."""
    dataset = work.datasets[source]
    loader = work.loader(dataset, LOADER_BATCHES[source] + 1, batch_size=RECIPE_BATCH, workers=workers)
    first_batch, rates, byte_rates = [], [], []
    staging = torch.empty(0, dtype=torch.uint8)
    for _ in range(LOADER_EPOCHS):
        start = time.perf_counter()
        iterator = iter(loader)
        next(iterator)
        first_batch.append(time.perf_counter() - start)
        start, clips, nbytes = time.perf_counter(), 0, 0
        for batch in iterator:
            if staging.numel() == 0:  # one clip's size: each input is copied in turn
                staging = torch.empty(max(input_bytes(i) for i in batch["images"]), dtype=torch.uint8)
            clips += len(batch["images"])
            nbytes += read_visual_inputs(batch, staging)
        seconds = time.perf_counter() - start
        rates.append(clips / seconds)
        byte_rates.append(nbytes / seconds)
    return {"first_batch": first_batch, "clips_per_s": rates, "bytes_per_s": byte_rates}


def _visual_tensor(item) -> torch.Tensor:
    """A collated visual input's tensor: tower features (cached) or pixels (online)."""
    return item["patch_features"] if isinstance(item, dict) else item


def input_bytes(item) -> int:
    """The bytes of a collated visual input (a cache entry, or a clip's pixels)."""
    tensor = _visual_tensor(item)
    return tensor.numel() * tensor.element_size()


def h100_demand(flops_per_clip: float, bytes_per_clip: float) -> dict:
    """What an H100 would consume on the cached path: its step's seconds per clip from the step's FLOPs at
    the stated share of peak, and the clips/s and bytes/s of cache entries that keep it busy."""
    seconds_per_clip = flops_per_clip / (H100_BF16_DENSE_FLOPS * H100_SHARE_OF_PEAK)
    clips_per_s = 1.0 / seconds_per_clip
    return {
        "seconds_per_clip": seconds_per_clip,
        "clips_per_s": clips_per_s,
        "bytes_per_s": clips_per_s * bytes_per_clip,
    }
