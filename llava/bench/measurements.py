"""The table's rows for one configuration, measured group by group in the order they are printed
(`Bench.run`): training steps, the multimodal core's overhead, clip decoding, the data loader against
the step, whole epochs, achieved FLOP/s, and generation."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

from ..data.video import read_video_frames
from . import data_path
from .configs import NUM_FRAMES, Shapes
from .generation_speed import GENERATION_BATCHES, SINGLE_RUN_ABOVE_S, time_generation
from .timing import count_flops, matmul_flops_per_second, side_by_side, synchronize, timed
from .workload import Workload

# Where a step's visual input comes from: pixels through the frozen tower, or the feature cache.
SOURCES = ("online", "cached")
# Epochs of eight steps; four cached ones through one loader: the first pays the workers' start-up, the
# later ones show the steady state of a long run (training keeps its workers across epochs), each timed
# beside as many steps of the language model alone.
EPOCH_STEPS = 8
EPOCHS = 4


def measure(shapes: Shapes, workdir: Path, device: torch.device, repeats: int, workers: int) -> list[tuple[str, str]]:
    """The rows of one configuration, as (measure, value), each printed as it is measured."""
    print(f"[{shapes.name}] preparing models, clips and the feature cache", flush=True)
    return Bench(Workload(shapes, workdir, device, workers), repeats).run()


class Bench:
    def __init__(self, work: Workload, repeats: int):
        self.work, self.repeats = work, repeats
        self.batch_size = work.shapes.batch_size
        self.rows: list[tuple[str, str]] = []

    def report(self, what: str, value: str) -> None:
        self.rows.append((what, value))
        print(f"  {what}: {value}", flush=True)

    def run(self) -> list[tuple[str, str]]:
        self.feature_caching()
        step_seconds, step_flops = self.train_steps()
        self.core_overhead()
        self.decoding()
        self.data_path(step_seconds, step_flops)
        self.epochs()
        self.achieved_flops(step_seconds, step_flops)
        self.generation()
        return self.rows

    def feature_caching(self) -> None:
        """What filling the cache took, when this run filled it: its loop (decoding, the tower, writing)
        against the tower's forward alone within it, and its set-up (the tower loaded and digested)."""
        summary = self.work.cache_summary
        if summary is not None:
            clips = summary["computed"]
            loop, tower = clips / summary["loop_seconds"], clips / summary["tower_seconds"]
            self.report(
                "feature caching (cache_features, once)",
                f"{loop:.2f} clips/s vs the tower alone {tower:.2f} clips/s: **{loop / tower:.0%}**; "
                f"set-up {summary['setup_seconds']:.1f} s",
            )

    def train_steps(self) -> tuple[dict[str, float], dict[str, int]]:
        """A training step (forward, backward, AdamW) on a batch already loaded: online against cached, side
        by side; then cached against the language model alone on text of the same length, side by side as
        a pair of their own, so that both follow each other alike and neither follows the online step (its
        gigabytes of tower activations) and with more repetitions (they take a second, not ten). Returns
        the seconds and the FLOPs of a step, by source ('online', 'cached', 'lm')."""
        b, work = self.batch_size, self.work
        steps = {source: (lambda batch=work.batches[source]: work.train_step(batch)) for source in SOURCES}
        steps["lm"] = work.lm_train_step
        # FLOPs are counted on the warm-up call, which the timing then discards.
        flops = {source: count_flops(step) for source, step in steps.items()}
        with_online = side_by_side({s: steps[s] for s in SOURCES}, work.device, self.repeats, warmup=0)
        pair = side_by_side({s: steps[s] for s in ("cached", "lm")}, work.device, 3 * self.repeats, warmup=0)
        seconds = {"online": with_online["online"], "cached": pair["cached"], "lm": pair["lm"]}
        for source in (*SOURCES, "lm"):
            t = seconds[source]
            what = "train step, language model alone" if source == "lm" else f"train step {source}"
            self.report(what, f"{b / t:.3f} samples/s ({t:.3f} s per batch of {b})")
        speed = with_online["online"] / with_online["cached"]
        share = pair["lm"] / pair["cached"]
        self.report("cached / online step speed", f"**{speed:.1f}x**")
        self.report(
            "the bound: online step / language model's step",
            f"{speed / share:.1f}x; the cached step reaches **{share:.0%}** of it",
        )
        return seconds, flops

    def core_overhead(self) -> None:
        """The multimodal overhead: the full forward+backward against the tower alone plus the LM alone on
        a text sequence as long as the spliced one (same mask and labels, so the same loss positions), and
        the cached forward+backward against its floor, the ratio of its FLOPs to the LM's."""
        work, model, online = self.work, self.work.model, self.work.batches["online"]
        tower_forward = work.tower_forward(torch.cat(online["images"]))

        def from_zero_gradients(forward_backward, *inputs):
            def call():
                model.zero_grad(set_to_none=True)
                forward_backward(*inputs)

            return call

        full_cached = from_zero_gradients(work.forward_backward, work.batches["cached"])
        lm = from_zero_gradients(work.lm_forward_backward)
        floor = count_flops(full_cached) / count_flops(lm)
        parts = side_by_side(
            {
                "full": from_zero_gradients(work.forward_backward, online),
                "tower": tower_forward,
                "lm": lm,
                "full_cached": full_cached,
            },
            work.device,
            self.repeats,
        )
        t_full, t_tower, t_lm, t_full_cached = parts["full"], parts["tower"], parts["lm"], parts["full_cached"]
        visual = model.get_model().num_visual_tokens(NUM_FRAMES)
        length = work.text_batch["input_ids"].shape[1]
        self.report("sequence", f"{length} tokens ({visual} visual), batch {self.batch_size}")
        self.report(
            "online forward+backward vs tower + LM",
            f"{t_full:.3f} s vs {t_tower:.3f} + {t_lm:.3f} s: **{t_full / (t_tower + t_lm):.3f}x**",
        )
        overhead = t_full_cached / t_lm
        self.report(
            "cached forward+backward vs LM alone",
            f"{t_full_cached:.3f} s vs {t_lm:.3f} s: **{overhead:.3f}x** (packer, projector, splicing) against "
            f"a floor of {floor:.3f}x (their FLOPs over the LM's): {overhead / floor - 1:+.1%}",
        )
        core = t_full_cached - t_lm  # the core's own work: the same in both steps, the tower aside
        self.report(
            "the core's own time (cached step - LM alone)",
            f"{core:.3f} s = {core / t_full:.1%} of the online forward+backward",
        )

    def decoding(self) -> None:
        """The same files decoded with each backend (the sampled frames, as training does)."""
        work = self.work
        paths = [os.path.join(work.assets["videos"], sample["media"]) for sample in work.datasets["online"].samples]
        for backend in ("decord", "pyav"):
            t = timed(
                lambda backend=backend: [read_video_frames(p, NUM_FRAMES, backend=backend) for p in paths],
                work.device,
                max(1, self.repeats // 2),
            )
            self.report(
                f"decode {NUM_FRAMES} frames, {backend}", f"{len(paths) / t:.2f} clips/s ({work.assets['clip']})"
            )

    def data_path(self, step_seconds: dict[str, float], step_flops: dict[str, int]) -> None:
        """The loader alone at the recipe's batch and workers, its workers kept across epochs, with the
        step replaced by nothing: each epoch's wait for its first batch, clips/s and GiB/s; beside them
        this machine's copy bandwidth and, for the cached path, what an H100 step at these shapes would
        consume."""
        work = self.work
        one, all_threads = 1, torch.get_num_threads()
        copy = {threads: data_path.copy_bandwidth(threads) for threads in sorted({one, all_threads})}
        # The cached set read here is a few entries (a real cache holds gigabytes): a copy of the same bytes
        # is measured beside the large one, in case the CPU's caches hold them.
        working_set = len(work.datasets["cached"]) * data_path.input_bytes(work.batches["cached"]["images"][0])
        same_size = data_path.copy_bandwidth(one, nbytes=working_set)
        self.report(
            "memory copy, this machine",
            ", ".join(f"{rate / data_path.GIB:.1f} GiB/s with {n} thread{'s' * (n > 1)}" for n, rate in copy.items())
            + f" ({data_path.COPY_BYTES >> 20} MiB, from memory); {same_size / data_path.GIB:.1f} GiB/s with 1 thread for "
            f"{working_set / (1 << 20):.0f} MiB, the size of the cached set read below",
        )
        # The cached path also without workers: the reading in the training process alone, without the
        # hand-off from worker processes.
        runs = [(source, work.workers) for source in SOURCES] + ([("cached", 0)] if work.workers else [])
        for source, workers in runs:
            measured = data_path.loader_alone(work, source, workers)
            later = measured["first_batch"][1:]
            rate, byte_rate = statistics.median(measured["clips_per_s"]), statistics.median(measured["bytes_per_s"])
            b, step_time = self.batch_size, step_seconds[source]
            self.report(
                f"data loader alone, {source} (batch {data_path.RECIPE_BATCH}, {workers} workers)",
                f"{rate:.1f} clips/s ({1e3 / rate:.2f} ms per clip) = {byte_rate / data_path.GIB:.2f} GiB/s = "
                f"{byte_rate / copy[one]:.0%} of one thread's copy from memory"
                + (f", {byte_rate / same_size:.0%} of its copy of the same bytes" if source == "cached" else "")
                + f"; first batch {measured['first_batch'][0]:.3f} s, "
                f"then {max(later):.3f} s in later epochs; **{rate * step_time / b:.1f}x** ahead of this machine's step",
            )
            if source == "cached" and workers == work.workers:
                self._h100_demand(step_flops["cached"] / b, byte_rate / rate, rate)

    def _h100_demand(self, flops_per_clip: float, bytes_per_clip: float, loader_rate: float) -> None:
        demand = data_path.h100_demand(flops_per_clip, bytes_per_clip)
        peak = data_path.H100_BF16_DENSE_FLOPS
        self.report(
            "an H100's cached step at these shapes would consume",
            f"{flops_per_clip / 1e9:.1f} GFLOP per clip / ({peak / 1e12:.1f} TFLOP/s bf16 x "
            f"{data_path.H100_SHARE_OF_PEAK:.0%}) = {demand['seconds_per_clip'] * 1e3:.3f} ms per clip: "
            f"{demand['clips_per_s']:,.0f} clips/s x {bytes_per_clip / (1 << 20):.2f} MiB = "
            f"{demand['bytes_per_s'] / data_path.GIB:.1f} GiB/s of cache entries, "
            f"**{demand['clips_per_s'] / loader_rate:.0f}x** what this loader delivers",
        )

    def epochs(self) -> None:
        """Training steps fed by the data loader: one epoch online and cached (worker start-up included),
        then the later cached epochs through the same loader, its workers kept (as training keeps them),
        each followed by as many steps of the language model alone: the bound, timed beside them."""
        work = self.work
        online = self._epoch_rate(work.loader(work.datasets["online"], EPOCH_STEPS))
        cached_loader = work.loader(work.datasets["cached"], EPOCH_STEPS)
        first = self._epoch_rate(cached_loader)
        later, bound = [], []
        for _ in range(EPOCHS - 1):
            later.append(self._epoch_rate(cached_loader))
            bound.append(self._lm_epoch_rate())
        self.report(
            f"first epoch through the data loader, {EPOCH_STEPS} steps",
            f"online {online:.3f}, cached {first:.3f} samples/s: **{first / online:.1f}x**",
        )
        rate, lm_rate = statistics.median(later), statistics.median(bound)
        self.report(
            f"cached epochs 2-{EPOCHS} (workers kept), {EPOCH_STEPS} steps each",
            f"{rate:.3f} samples/s = **{rate / lm_rate:.0%}** of the bound (the language model's step after "
            f"each epoch, {lm_rate:.3f} samples/s); {rate / online:.1f}x the online epoch",
        )

    def achieved_flops(self, step_seconds: dict[str, float], step_flops: dict[str, int]) -> None:
        """The step's FLOPs over its time, as a share of this machine's matmul rate."""
        peak = matmul_flops_per_second(self.work.device, self.work.autocast_dtype or torch.float32)
        for source in SOURCES:
            flops = step_flops[source]
            achieved = flops / step_seconds[source]
            self.report(
                f"achieved FLOP/s, {source} step",
                f"{achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.0%} of matmul {peak / 1e9:.1f} GFLOP/s ({flops / 1e9:.1f} GFLOP per step)",
            )

    def generation(self) -> None:
        """Captions/s at each batch size, and what the larger batch gains."""
        model = self.work.model
        model.eval()
        per_call: dict[int, float] = {}
        for batch in GENERATION_BATCHES:
            # A call's cost, estimated from the smaller batches already measured: it grows with the clips.
            estimate = max((seconds * batch / smaller for smaller, seconds in per_call.items()), default=0.0)
            single = estimate > SINGLE_RUN_ABOVE_S
            per_call[batch] = time_generation(
                self.work, batch, repeats=1 if single else self.repeats, warmup=0 if single else 1, report=self.report
            )
        model.train()
        first, last = GENERATION_BATCHES[0], GENERATION_BATCHES[-1]
        speedup = (last / per_call[last]) / (first / per_call[first])
        self.report(f"generation captions/s, batch {last} / batch {first}", f"**{speedup:.1f}x**")

    def _epoch_rate(self, loader) -> float:
        """Samples/s of training through one epoch of `loader`, waiting for its first batch included."""
        work = self.work
        synchronize(work.device)
        start, samples = time.perf_counter(), 0
        for batch in loader:
            work.train_step(work.to_device(batch))
            samples += len(batch["input_ids"])
        synchronize(work.device)
        return samples / (time.perf_counter() - start)

    def _lm_epoch_rate(self) -> float:
        """Samples/s of as many language-model-alone steps as an epoch has."""
        work = self.work
        synchronize(work.device)
        start = time.perf_counter()
        for _ in range(EPOCH_STEPS):
            work.lm_train_step()
        synchronize(work.device)
        return EPOCH_STEPS * self.batch_size / (time.perf_counter() - start)
