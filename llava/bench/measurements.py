"""The table's rows for one configuration, measured group by group in the order they are printed
(`Bench.run`): training steps, the multimodal core's overhead, clip decoding, the data loader against
the step, whole epochs, achieved FLOP/s, and generation."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..data.video import read_video_frames
from .configs import NUM_FRAMES, Shapes
from .generation_speed import GENERATION_BATCHES, SINGLE_RUN_ABOVE_S, time_generation
from .timing import count_flops, matmul_flops_per_second, side_by_side, synchronize, timed
from .workload import Workload

# Where a step's visual input comes from: pixels through the frozen tower, or the feature cache.
SOURCES = ("online", "cached")
# Epochs of eight steps: the data loader's start-up (a fresh set of workers every epoch, as the Trainer
# does) is paid once per epoch, and real epochs are longer still.
EPOCH_STEPS = 8


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
        self.loaders_vs_steps(step_seconds)
        self.epochs()
        self.achieved_flops(step_seconds, step_flops)
        self.generation()
        return self.rows

    def feature_caching(self) -> None:
        """What filling the cache took, when this run filled it."""
        if self.work.cache_seconds is not None:
            rate = self.work.shapes.num_clips / self.work.cache_seconds
            self.report("feature caching (cache_features, once)", f"{rate:.2f} clips/s")

    def train_steps(self) -> tuple[dict[str, float], dict[str, int]]:
        """A training step (forward, backward, AdamW) on a batch already loaded, online and cached, side
        by side. Returns the seconds and the FLOPs of a step, by source."""
        b, work = self.batch_size, self.work
        steps = {source: (lambda batch=work.batches[source]: work.train_step(batch)) for source in SOURCES}
        # FLOPs are counted on the warm-up call, which the timing then discards.
        flops = {source: count_flops(step) for source, step in steps.items()}
        seconds = side_by_side(steps, work.device, self.repeats, warmup=0)
        for source in SOURCES:
            t = seconds[source]
            self.report(f"train step {source}", f"{b / t:.3f} samples/s ({t:.3f} s per batch of {b})")
        self.report("cached / online step speed", f"**{seconds['online'] / seconds['cached']:.1f}x**")
        return seconds, flops

    def core_overhead(self) -> None:
        """The multimodal overhead: the full forward+backward against the tower alone plus the LM alone on
        a text sequence as long as the spliced one (same mask and labels, so the same loss positions)."""
        work, model, online = self.work, self.work.model, self.work.batches["online"]
        tower_forward = work.tower_forward(torch.cat(online["images"]))
        with torch.no_grad():
            _, _, mask, _, embeds, labels = model.prepare_inputs_labels_for_multimodal(
                online["input_ids"], None, online["attention_mask"], None, online["labels"], online["images"]
            )
        text_ids = torch.randint(0, model.config.vocab_size, mask.shape, device=work.device)

        def from_zero_gradients(forward_backward, *inputs):
            def call():
                model.zero_grad(set_to_none=True)
                forward_backward(*inputs)

            return call

        parts = side_by_side(
            {
                "full": from_zero_gradients(work.forward_backward, online),
                "tower": tower_forward,
                "lm": from_zero_gradients(work.lm_forward_backward, text_ids, mask, labels),
                "full_cached": from_zero_gradients(work.forward_backward, work.batches["cached"]),
            },
            work.device,
            self.repeats,
        )
        t_full, t_tower, t_lm, t_full_cached = parts["full"], parts["tower"], parts["lm"], parts["full_cached"]
        visual = model.get_model().num_visual_tokens(NUM_FRAMES)
        self.report("sequence", f"{embeds.shape[1]} tokens ({visual} visual), batch {self.batch_size}")
        self.report(
            "online forward+backward vs tower + LM",
            f"{t_full:.3f} s vs {t_tower:.3f} + {t_lm:.3f} s: **{t_full / (t_tower + t_lm):.3f}x**",
        )
        self.report(
            "cached forward+backward vs LM alone",
            f"{t_full_cached:.3f} s vs {t_lm:.3f} s: {t_full_cached / t_lm:.3f}x (packer, projector, splicing)",
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

    def loaders_vs_steps(self, step_seconds: dict[str, float]) -> None:
        """Whether the data loader keeps ahead of the step it feeds, online and cached."""
        b = self.batch_size
        for source in SOURCES:
            rate, step_time = self._loader_rate(self.work.datasets[source]), step_seconds[source]
            self.report(
                f"data loader {source} ({self.work.workers} workers)",
                f"{rate:.2f} clips/s vs step {b / step_time:.3f} samples/s: **{rate * step_time / b:.1f}x** ahead",
            )

    def epochs(self) -> None:
        rates = {source: self._epoch_rate(self.work.datasets[source]) for source in SOURCES}
        self.report(
            f"epoch through the data loader, {EPOCH_STEPS} steps",
            f"online {rates['online']:.3f}, cached {rates['cached']:.3f} samples/s: "
            f"**{rates['cached'] / rates['online']:.1f}x**",
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

    def _loader_rate(self, dataset) -> float:
        """Clips/s the DataLoader delivers with the training default's workers, after the first batch
        (worker start-up excluded), over enough batches for every worker to be busy."""
        iterator = iter(self.work.loader(dataset, 4 * max(self.work.workers, 1) + 1))
        next(iterator)
        start, clips = time.perf_counter(), 0
        for batch in iterator:
            clips += len(batch["images"])
        return clips / (time.perf_counter() - start)

    def _epoch_rate(self, dataset) -> float:
        """Samples/s of training through the data loader, worker start-up included, as in an epoch."""
        work = self.work
        synchronize(work.device)
        start, samples = time.perf_counter(), 0
        for batch in work.loader(dataset, EPOCH_STEPS):
            work.train_step(work.to_device(batch))
            samples += len(batch["input_ids"])
        synchronize(work.device)
        return samples / (time.perf_counter() - start)
