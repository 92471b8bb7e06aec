"""How the benchmark times and counts: medians of interleaved calls, this machine's matmul rate, FLOPs."""

from __future__ import annotations

import statistics
import time

import torch


def synchronize(device: torch.device) -> None:
    """Waits for the GPU's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `repeats` calls after `warmup` calls."""
    return side_by_side({"fn": fn}, device, repeats, warmup)["fn"]


def side_by_side(fns: dict, device, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, the calls interleaved (a, b, c, a, b, c, ...) so that a slow
    spell of a shared machine weighs on all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_flops_per_second(device, dtype, n: int = 2048, repeats: int = 5) -> float:
    """The best of `repeats` square matmuls: this machine's attainable dense FLOP/s."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, device, repeats=1, warmup=0) for _ in range(repeats))
    return 2 * n**3 / best


def count_flops(fn) -> int:
    """The FLOPs of one call of `fn`, as torch's FLOP counter sees its operations."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
