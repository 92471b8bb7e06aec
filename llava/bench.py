"""Speed of every training stage, measured side by side in one run: `python -m llava.bench`.

Two configurations:
- seed: the headline model's shapes. GPT-2 12x768 with a 30,000-token vocabulary and 1,024 positions,
  a DINOv2-large-shaped tower (24 layers, width 1024, random weights), 8 frames at 224 pixels, packer
  64 + 32 tokens, projector 1024 -> 2560 -> 768; web-like clips (640x360, 25 fps, 10 s, H.264).
- demo: the `make demo` model (GPT-2 4x128, a 2-layer DINOv2 on 56-pixel crops) on the demo's clips.

For each it reports:
- train-step samples/s online (pixels through the frozen tower) and from the feature cache, and the
  ratio: a training step is forward, backward and an AdamW step, on batches already loaded;
- multimodal overhead: an online forward+backward against the sum of its parts (tower forward, and the
  language model's forward+backward on a sequence of the same length);
- clip decoding: clips/s with decord and with PyAV on the same files, and the data loader's clips/s
  (default workers) online and cached, against the step's consumption;
- whole epochs, online and cached: training steps fed by the data loader, worker start-up included;
- achieved FLOP/s of the step (torch's FLOP counter over one step, divided by the step time) as a
  share of this machine's measured matmul FLOP/s;
- generation, the captioning path of evaluation clients: captions/s of greedy decoding, 32 new tokens
  (EOS stopping off, so every call writes all 32), KV cache on, at batch 1 and 16, through the model's
  own `generate(input_ids, images=...)`; the share of that time in the tower, the prefill and the decode
  steps; and the forward-only bound: one forward of the language model over the prompt and the first 31
  new tokens (logits on the last 32 positions), the same arithmetic as the cached decoding in one pass.

`python -m llava.bench --eval-milestones` measures instead what evaluating milestone checkpoints beside
training (--eval_milestones) costs the training (llava/bench_eval_milestones.py).

The table goes to stdout and to --output (docs/benchmarks.md under the working directory: run it from a
checkout's root to update the repository's table) with a description of the machine. Models and clips are
written under --workdir (bench_work/ under the working directory; kept, so a second run skips their
creation).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import errors
from .errors import InputError, UsageError

# The training script's DATALOADER_NUM_WORKERS default.
DEFAULT_WORKERS = 4
# Generation: new tokens per caption (a short caption), and the batch sizes measured.
NEW_TOKENS = 32
GENERATION_BATCHES = (1, 16)
# A generation measurement whose single call would take longer than this is timed once, without a
# warm-up (batch 1 has already warmed the code paths): at the seed's shapes a batch of 16 clips sends
# 128 frames through the DINOv2-large tower, minutes on two CPU cores.
SINGLE_RUN_ABOVE_S = 20.0


@dataclass(frozen=True)
class Shapes:
    name: str
    gpt2: dict  # GPT2Config arguments
    tower: dict  # Dinov2Config arguments
    crop: int
    resize: int
    projector_hidden: int
    num_clips: int
    batch_size: int
    clip_size: tuple[int, int]  # width, height of the written clips
    clip_seconds: float
    fps: int


SHAPES = {
    "seed": Shapes(
        "seed",
        gpt2=dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=30000),
        tower=dict(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            patch_size=14,
            image_size=518,
        ),
        crop=224,
        resize=256,
        projector_hidden=2560,
        num_clips=4,
        batch_size=2,
        clip_size=(640, 360),
        clip_seconds=10.0,
        fps=25,
    ),
    "demo": Shapes(
        "demo",
        gpt2=dict(n_layer=4, n_embd=128, n_head=4, n_positions=256),
        tower=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            patch_size=7,
            image_size=56,
        ),
        crop=56,
        resize=64,
        projector_hidden=128,
        num_clips=16,
        batch_size=8,
        clip_size=(64, 64),
        clip_seconds=2.0,
        fps=8,
    ),
}


# ------------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
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
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_flops_per_second(device, dtype, n: int = 2048, repeats: int = 5) -> float:
    """The best of `repeats` square matmuls: this machine's attainable dense FLOP/s."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, device, repeats=1, warmup=0) for _ in range(repeats))
    return 2 * n**3 / best


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------ assets
def _web_like_frames(num_frames: int, width: int, height: int, seed: int) -> np.ndarray:
    """Textured frames with camera-like motion: a fixed noise texture panned across a moving gradient,
    so the encoder spends bits as on real footage (flat synthetic frames decode unrealistically fast)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, size=(height + 64, width + 256, 3), dtype=np.uint8)
    texture = ((texture.astype(np.uint16) + np.roll(texture, 1, axis=1) + np.roll(texture, 1, axis=0)) // 3).astype(
        np.uint8
    )
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        dx, dy = (t * 2) % 256, (t // 4) % 64
        gradient = ((x + 3 * t) % width * 255 // width).astype(np.uint8)[..., None]
        frames[t] = texture[dy : dy + height, dx : dx + width] // 2 + gradient // 2
    return frames


def build_assets(shapes: Shapes, workdir: Path) -> dict:
    """Clips, captions, tokenizer, GPT-2 and tower folders for one configuration (reused when present)."""
    from transformers import AutoTokenizer, BitImageProcessorPil, Dinov2Config, Dinov2Model, GPT2Config, GPT2LMHeadModel

    from .demo.synthetic import ClipSpec, all_specs, caption_corpus, render_frames, train_tokenizer, write_clip

    folder = workdir / shapes.name
    done = folder / "assets.json"
    assets = _reusable_assets(done)
    if assets is not None:
        return assets
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    specs = all_specs()
    samples = []
    num_frames = int(shapes.clip_seconds * shapes.fps)
    for i in range(shapes.num_clips):
        spec: ClipSpec = specs[(7 * i) % len(specs)]
        width, height = shapes.clip_size
        if shapes.name == "demo":
            frames = render_frames(spec, num_frames, width, seed=i)
        else:
            frames = _web_like_frames(num_frames, width, height, seed=i)
        name = f"clip_{i:03d}.mp4"
        # A keyframe every 2 seconds, as web video is commonly encoded (the seeking decoders depend on it).
        write_clip(videos / name, frames, fps=shapes.fps, gop_size=2 * shapes.fps)
        samples.append(
            {
                "id": name,
                "video": name,
                "conversations": [
                    {"from": "human", "value": "<video>\n"},
                    {"from": "gpt", "value": spec.caption(i % 3)},
                ],
            }
        )
    (folder / "train.json").write_text(json.dumps(samples, ensure_ascii=False))

    tokenizer_dir = train_tokenizer(folder / "tokenizer", caption_corpus())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    gpt2 = dict(shapes.gpt2)
    gpt2.setdefault("vocab_size", len(tokenizer))
    GPT2LMHeadModel(
        GPT2Config(
            **gpt2,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    ).save_pretrained(folder / "gpt2")
    tokenizer.save_pretrained(folder / "gpt2")
    Dinov2Model(Dinov2Config(**shapes.tower)).save_pretrained(folder / "tower")
    BitImageProcessorPil(
        size={"shortest_edge": shapes.resize}, crop_size={"height": shapes.crop, "width": shapes.crop}
    ).save_pretrained(folder / "tower")
    assets = {
        "folder": str(folder),
        "data": str(folder / "train.json"),
        "videos": str(videos),
        "gpt2": str(folder / "gpt2"),
        "tower": str(folder / "tower"),
        "clip": f"{shapes.clip_size[0]}x{shapes.clip_size[1]}, {shapes.fps} fps, {shapes.clip_seconds:g} s, H.264, keyframe every 2 s",
    }
    # Written last and renamed into place: a run stopped while writing leaves no assets.json, so the
    # next run builds the assets again instead of reading half a file.
    partial = done.with_name(done.name + ".partial")
    partial.write_text(json.dumps(assets))
    os.replace(partial, done)
    return assets


def _reusable_assets(done: Path) -> dict | None:
    """The assets an earlier run recorded in `done`, or None (they are built again) when the record is
    missing, unreadable, or names files that are gone (a workdir partly deleted by hand)."""
    if not done.is_file():
        return None
    try:
        assets = json.loads(done.read_text())
        paths = [assets[key] for key in ("data", "videos", "gpt2", "tower")]
    except (ValueError, KeyError, TypeError) as e:
        logging.warning("%s is damaged (%s); building the benchmark's models and clips again", done, e)
        return None
    missing = [path for path in paths if not os.path.exists(path)]
    if missing:
        logging.warning("%s names %s, which is gone; building the benchmark's models and clips again", done, missing[0])
        return None
    return assets


def _train_argv(shapes: Shapes, assets: dict, workdir: Path, cache: str | None = None) -> list[str]:
    argv = [
        "--model_name_or_path",
        assets["gpt2"],
        "--vision_tower",
        assets["tower"],
        "--data_path",
        assets["data"],
        "--video_folder",
        assets["videos"],
        "--num_frames",
        "8",
        "--mm_projector_hidden_size",
        str(shapes.projector_hidden),
        "--output_dir",
        str(workdir / shapes.name / "unused-output"),
        "--disable_tqdm",
        "True",
    ]
    return argv + (["--feature_cache", cache] if cache else [])


# -------------------------------------------------------------------------------------- measuring
class Bench:
    def __init__(self, shapes: Shapes, workdir: Path, device: torch.device, repeats: int, workers: int):
        self.shapes, self.workdir, self.device, self.repeats, self.workers = shapes, workdir, device, repeats, workers
        self.autocast_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
        self.rows: list[tuple[str, str]] = []

    def report(self, what: str, value: str) -> None:
        self.rows.append((what, value))
        print(f"  {what}: {value}", flush=True)

    def _autocast(self):
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def setup(self):
        from transformers import AutoTokenizer

        from .train import cache_features, train

        self.assets = build_assets(self.shapes, self.workdir)
        cache_dir = str(self.workdir / self.shapes.name / "feature-cache")
        start = time.perf_counter()
        summary = cache_features.main(
            _train_argv(self.shapes, self.assets, self.workdir, cache_dir)
            + ["--dataloader_num_workers", "0", "--device", str(self.device)]
        )
        self.cache_seconds = (time.perf_counter() - start) if summary["computed"] else None
        model_args, data_args, training_args = train.parse_args(_train_argv(self.shapes, self.assets, self.workdir))
        _, model = train.build_model(model_args, data_args, training_args)
        self.model = model.to(self.device).train()
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        self.online, self.collator, _ = train.build_data(model_args, data_args, training_args, tokenizer, model)
        data_args.feature_cache = cache_dir
        self.cached, _, _ = train.build_data(model_args, data_args, training_args, tokenizer, model)
        if len(self.cached.cache_keys) != len(self.cached):
            raise RuntimeError("the feature cache does not hold every benchmark clip")
        b = self.shapes.batch_size
        self.online_batch = self._to_device(self.collator([self.online[i] for i in range(b)]))
        self.cached_batch = self._to_device(self.collator([self.cached[i] for i in range(b)]))
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-5)

    def _to_device(self, batch: dict) -> dict:
        def move(x):
            if isinstance(x, torch.Tensor):
                return x.to(self.device)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            if isinstance(x, list):
                return [move(v) for v in x]
            return x

        return {k: move(v) for k, v in batch.items() if k != "skipped"}

    # ---------------------------------------------------------------------------------- the steps
    def forward_backward(self, batch: dict) -> None:
        with self._autocast():
            loss = self.model(**batch).loss
        loss.backward()

    def train_step(self, batch: dict) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward(batch)
        self.optimizer.step()

    def lm_forward_backward(self, ids, mask, labels) -> None:
        with self._autocast():
            loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()

    def run(self) -> list[tuple[str, str]]:
        s, device, n = self.shapes, self.device, self.repeats
        print(f"[{s.name}] preparing models, clips and the feature cache", flush=True)
        self.setup()
        b = s.batch_size
        if self.cache_seconds is not None:
            self.report("feature caching (cache_features, once)", f"{s.num_clips / self.cache_seconds:.2f} clips/s")

        # FLOPs are counted on the warm-up call, which the timing then discards.
        flops_online = count_flops(lambda: self.train_step(self.online_batch))
        flops_cached = count_flops(lambda: self.train_step(self.cached_batch))
        steps = side_by_side(
            {
                "online": lambda: self.train_step(self.online_batch),
                "cached": lambda: self.train_step(self.cached_batch),
            },
            device,
            n,
            warmup=0,
        )
        t_online, t_cached = steps["online"], steps["cached"]
        self.report("train step online", f"{b / t_online:.3f} samples/s ({t_online:.3f} s per batch of {b})")
        self.report("train step cached", f"{b / t_cached:.3f} samples/s ({t_cached:.3f} s per batch of {b})")
        self.report("cached / online step speed", f"**{t_online / t_cached:.1f}x**")

        # Multimodal overhead: the full forward+backward against the tower alone plus the LM alone on a
        # text sequence as long as the spliced one (same mask and labels, so the same loss positions).
        tower = self.model.get_vision_tower()
        frames = torch.cat(self.online_batch["images"])
        with torch.no_grad():
            _, _, mask, _, embeds, labels = self.model.prepare_inputs_labels_for_multimodal(
                self.online_batch["input_ids"],
                None,
                self.online_batch["attention_mask"],
                None,
                self.online_batch["labels"],
                self.online_batch["images"],
            )
        text_ids = torch.randint(0, self.model.config.vocab_size, mask.shape, device=device)

        def tower_forward():
            with torch.no_grad(), self._autocast():
                tower(frames)

        def full():
            self.model.zero_grad(set_to_none=True)
            self.forward_backward(self.online_batch)

        def lm_only():
            self.model.zero_grad(set_to_none=True)
            self.lm_forward_backward(text_ids, mask, labels)

        def full_cached():
            self.model.zero_grad(set_to_none=True)
            self.forward_backward(self.cached_batch)

        parts = side_by_side(
            {"full": full, "tower": tower_forward, "lm": lm_only, "full_cached": full_cached}, device, n
        )
        t_full, t_tower, t_lm, t_full_cached = parts["full"], parts["tower"], parts["lm"], parts["full_cached"]
        self.report(
            "sequence", f"{embeds.shape[1]} tokens ({self.model.get_model().num_visual_tokens(8)} visual), batch {b}"
        )
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

        # Decoding the same files with each backend (the sampled 8 frames, as training does).
        from .data.video import read_video_frames

        paths = [os.path.join(self.assets["videos"], sample["media"]) for sample in self.online.samples]
        for backend in ("decord", "pyav"):
            t = timed(
                lambda backend=backend: [read_video_frames(p, 8, backend=backend) for p in paths],
                device,
                max(1, n // 2),
            )
            self.report(f"decode 8 frames, {backend}", f"{len(paths) / t:.2f} clips/s ({self.assets['clip']})")

        for name, dataset, step_time in (("online", self.online, t_online), ("cached", self.cached, t_cached)):
            rate = self._loader_rate(dataset)
            self.report(
                f"data loader {name} ({self.workers} workers)",
                f"{rate:.2f} clips/s vs step {b / step_time:.3f} samples/s: **{rate * step_time / b:.1f}x** ahead",
            )

        # Epochs of eight steps: the data loader's start-up (a fresh set of workers every epoch, as the
        # Trainer does) is paid once per epoch, and real epochs are longer still.
        batches = 8
        online_epoch, cached_epoch = self._epoch_rate(self.online, batches), self._epoch_rate(self.cached, batches)
        self.report(
            f"epoch through the data loader, {batches} steps",
            f"online {online_epoch:.3f}, cached {cached_epoch:.3f} samples/s: **{cached_epoch / online_epoch:.1f}x**",
        )

        peak = matmul_flops_per_second(device, self.autocast_dtype or torch.float32)
        for name, flops, t in (("online", flops_online, t_online), ("cached", flops_cached, t_cached)):
            achieved = flops / t
            self.report(
                f"achieved FLOP/s, {name} step",
                f"{achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.0%} of matmul {peak / 1e9:.1f} GFLOP/s ({flops / 1e9:.1f} GFLOP per step)",
            )

        self.model.eval()
        per_call: dict[int, float] = {}
        for batch in GENERATION_BATCHES:
            # A call's cost, estimated from the smaller batches already measured: it grows with the clips.
            estimate = max((seconds * batch / smaller for smaller, seconds in per_call.items()), default=0.0)
            single = estimate > SINGLE_RUN_ABOVE_S
            per_call[batch] = self.generation(batch, repeats=1 if single else n, warmup=0 if single else 1)
        self.model.train()
        first, last = GENERATION_BATCHES[0], GENERATION_BATCHES[-1]
        speedup = (last / per_call[last]) / (first / per_call[first])
        self.report(f"generation captions/s, batch {last} / batch {first}", f"**{speedup:.1f}x**")
        return self.rows

    def generation(self, batch_size: int, repeats: int, warmup: int) -> float:
        """Greedy captions of NEW_TOKENS tokens for `batch_size` clips through `generate(images=...)`,
        timed side by side with its parts, each run alone: the tower on the same frames; the packer,
        projector and splicing (from the cached tower features of the same clips); the language
        model's own `generate` from the spliced prompt, for one token (the prefill: its forward over the
        prompt) and for NEW_TOKENS (the difference: the decode steps); and the forward-only bound.
        Reports the rows, returns the seconds per call."""
        tokenizer, template = self.online.tokenizer, self.online.template
        samples = [i % len(self.online) for i in range(batch_size)]
        clips = [self.online[i]["pixel_values"].to(self.device) for i in samples]
        features = [{"patch_features": self.cached[i]["patch_features"].to(self.device)} for i in samples]
        prompts = [template.prompt_ids(self.online.samples[i]["conversations"], tokenizer) for i in samples]
        if len(set(map(len, prompts))) != 1:
            raise RuntimeError("generation bench: the prompts differ in length; this measurement assumes no padding")
        ids = torch.tensor(prompts, device=self.device)
        mask = torch.ones_like(ids)
        # EOS stopping off (eos_token_id=None): every call writes exactly NEW_TOKENS tokens.
        greedy = dict(do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=tokenizer.eos_token_id)
        tower = self.model.get_vision_tower()
        frames = torch.cat(clips)

        def splice():
            with torch.no_grad(), self._autocast():
                return self.model.prepare_inputs_labels_for_multimodal(ids, None, mask, None, None, features)

        _, _, spliced_mask, _, embeds, _ = splice()
        # The bound's input: the spliced prompt and NEW_TOKENS - 1 more tokens (the last new token is
        # never fed back); which tokens does not change the cost.
        more = torch.randint(0, self.model.config.vocab_size, (batch_size, NEW_TOKENS - 1), device=self.device)
        bound_embeds = torch.cat([embeds, self.model.get_input_embeddings()(more).to(embeds.dtype)], dim=1)
        bound_mask = torch.ones(bound_embeds.shape[:2], dtype=spliced_mask.dtype, device=self.device)

        def caption():
            with self._autocast():
                out = self.model.generate(ids, attention_mask=mask, images=clips, max_new_tokens=NEW_TOKENS, **greedy)
            if tuple(out.shape) != (batch_size, NEW_TOKENS):
                raise RuntimeError(
                    f"generation bench: generate returned {tuple(out.shape)}, expected ({batch_size}, {NEW_TOKENS})"
                )

        def tower_forward():
            with torch.no_grad(), self._autocast():
                tower(frames)

        def lm_generate(new_tokens: int):
            with self._autocast():
                self.model.generate(
                    inputs_embeds=embeds, attention_mask=spliced_mask, max_new_tokens=new_tokens, **greedy
                )

        def bound():
            with torch.no_grad(), self._autocast():
                self.model(inputs_embeds=bound_embeds, attention_mask=bound_mask, logits_to_keep=NEW_TOKENS)

        t = side_by_side(
            {
                "caption": caption,
                "tower": tower_forward,
                "splice": splice,
                "prefill": lambda: lm_generate(1),
                "lm": lambda: lm_generate(NEW_TOKENS),
                "bound": bound,
            },
            self.device,
            repeats,
            warmup,
        )
        runs = ("one timed run" if repeats == 1 else f"median of {repeats} runs") + (
            ", after a warm-up" if warmup else ", no warm-up"
        )
        call, decode = t["caption"], t["lm"] - t["prefill"]
        parts = {
            "tower": t["tower"],
            "packer+projector+splicing": t["splice"],
            "prefill": t["prefill"],
            "decode steps": decode,
        }
        shares = ", ".join(f"{name} {value / call:.0%}" for name, value in parts.items())
        self.report(
            f"generation, batch {batch_size}",
            f"{batch_size / call:.3f} captions/s ({call:.3f} s per call, {embeds.shape[1]} prompt tokens; {runs})",
        )
        self.report(
            f"generation time shares, batch {batch_size}",
            f"{shares} ({decode / (NEW_TOKENS - 1) * 1e3:.1f} ms per step); the parts add up to {sum(parts.values()) / call:.0%} of the call",
        )
        at_bound = t["tower"] + t["splice"] + t["bound"]
        self.report(
            f"LM decoding vs forward-only bound, batch {batch_size}",
            f"{t['lm']:.3f} s vs one forward {t['bound']:.3f} s: **{t['lm'] / t['bound']:.2f}x**; "
            f"whole caption at the bound {batch_size / at_bound:.3f} captions/s",
        )
        return call

    def _loader(self, dataset, min_batches: int):
        from torch.utils.data import ConcatDataset, DataLoader

        passes = -(-min_batches * self.shapes.batch_size // len(dataset))
        return DataLoader(
            ConcatDataset([dataset] * passes),
            batch_size=self.shapes.batch_size,
            num_workers=self.workers,
            collate_fn=self.collator,
        )

    def _loader_rate(self, dataset) -> float:
        """Clips/s the DataLoader delivers with the training default's workers, after the first batch
        (worker start-up excluded), over enough batches for every worker to be busy."""
        iterator = iter(self._loader(dataset, 4 * max(self.workers, 1) + 1))
        next(iterator)
        start, clips = time.perf_counter(), 0
        for batch in iterator:
            clips += len(batch["images"])
        return clips / (time.perf_counter() - start)

    def _epoch_rate(self, dataset, batches: int) -> float:
        """Samples/s of training through the data loader, worker start-up included, as in an epoch."""
        _sync(self.device)
        start, samples = time.perf_counter(), 0
        for batch in self._loader(dataset, batches):
            self.train_step(self._to_device(batch))
            samples += len(batch["input_ids"])
        _sync(self.device)
        return samples / (time.perf_counter() - start)


# --------------------------------------------------------------------------------------- reporting
def describe_machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)} (bf16 autocast)"
    else:
        text += ", CPU only (float32)"
    return text


def describe_load(start: tuple[float, float, float], end: tuple[float, float, float]) -> str:
    """The machine's load around the run. The run itself keeps about its torch threads busy, so other work
    shows as a load at the start (before the run's own) or clearly above the run's threads at the end."""
    cores, threads = os.cpu_count(), torch.get_num_threads()
    text = (
        f"Load average (1 min) {start[0]:.1f} when the run began and {end[0]:.1f} when it ended, on "
        f"{cores} cores (this run alone keeps about {threads} busy)."
    )
    if start[0] >= 1.0 or end[0] > threads + 1:
        text += f" Other work shared this {cores}-core machine during the run: its absolute times are inflated."
    return text


def write_markdown(path: Path, machine: str, results: dict[str, list[tuple[str, str]]], argv: str, load: str) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"`python -m llava.bench {argv}`".replace(" `", "`"),  # the command, as it was run
        "",
        f"Measured {datetime.date.today().isoformat()} on: {machine}.",
        load,
        "Absolute times depend on what else the machine runs meanwhile (a shared machine inflates them, and",
        "many small operations, such as decode steps, suffer most); every ratio comes from measurements",
        "taken side by side in this one run, and the ratios are the figures to compare.",
        "Timings are medians of interleaved repetitions. 'vs tower + LM' sets two parts timed alone against",
        "one whole step, so it moves by a few percent with the machine's noise (it can read below 1); the",
        "core's own time (cached step minus the LM alone) is the steadier measure of what the multimodal",
        "core adds.",
        "",
        "Generation is greedy decoding through the model's own `generate(input_ids, attention_mask=...,",
        f"images=[clip, ...], max_new_tokens={NEW_TOKENS}, do_sample=False, eos_token_id=None)`, the call evaluation",
        f"clients make: `eos_token_id=None` turns EOS stopping off, so every call writes {NEW_TOKENS} new tokens; the",
        "KV cache is on (transformers' default). The time shares are parts timed alone, beside the whole call:",
        "the tower on the call's frames; the packer, projector and splicing (from cached tower features of the",
        "same clips); the prefill (the language model's `generate` of one token from the spliced prompt: its",
        f"forward over the prompt, with `generate`'s set-up); the decode steps (its `generate` of {NEW_TOKENS}",
        f"tokens minus that of one: {NEW_TOKENS - 1} cached steps). 'The parts add up to' says how much of the call",
        "they account for; far from 100% means the machine's noise. The forward-only bound is one forward of",
        f"the language model over the prompt and the first {NEW_TOKENS - 1} new tokens, logits on the last",
        f"{NEW_TOKENS} positions: the arithmetic of the cached decoding done in one pass, a floor that decoding",
        "one token at a time cannot beat. 'LM decoding vs forward-only bound' is what decoding token by token",
        "costs over it; 'whole caption at the bound' is the tower, the splicing and that one forward. A",
        f"generation call that would take over {SINGLE_RUN_ABOVE_S:g} s (the seed's batch 16: 128 frames through the",
        "tower) is timed once, without a warm-up, as its row says.",
        "",
    ]
    for name, rows in results.items():
        shapes = SHAPES[name]
        lines += [f"## {name}", "", _describe_shapes(shapes), "", "| measure | value |", "| --- | --- |"]
        lines += [f"| {what} | {value} |" for what, value in rows]
        lines.append("")
    text = "\n".join(lines)
    with errors.saving(str(path), "the benchmark table", needed=len(text.encode())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _describe_shapes(s: Shapes) -> str:
    g, t = s.gpt2, s.tower
    vocab = f", vocabulary {g['vocab_size']}" if "vocab_size" in g else ""
    return (
        f"GPT-2 {g['n_layer']}x{g['n_embd']}{vocab}; DINOv2-shaped tower {t['num_hidden_layers']}x{t['hidden_size']} "
        f"(random weights) on {s.crop}-pixel crops; 8 frames; packer 64 + 32 tokens; projector -> "
        f"{s.projector_hidden} -> {g['n_embd']}; batch {s.batch_size}; {s.num_clips} clips."
    )


def _count(minimum: int):
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def parse_configs(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown or not names:
        what = f"unknown configuration {unknown[0]!r}" if unknown else "no configuration named"
        raise UsageError(f"--configs {text!r}: {what} (choose from {', '.join(SHAPES)})")
    return names


def parse_device(text: str) -> torch.device:
    """The --device, refused now if this machine cannot run it (not after minutes of building assets)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device {text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise UsageError(f"--device {text}: no CUDA device is available (torch {torch.__version__}, {build})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_output(output: str) -> None:
    if os.path.isdir(output):
        raise InputError(
            f"--output {output} is a folder; name the table's file, e.g. {os.path.join(output, 'benchmarks.md')}"
        )
    # A path that does not exist yet is checked by the folder it would be made in (check_writable walks up).
    target = os.path.dirname(os.path.abspath(output)) if os.path.exists(output) else output
    errors.check_writable(target, "--output")


def build_parser() -> errors.ArgumentParser:
    parser = errors.ArgumentParser(prog="python -m llava.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="seed,demo", help="comma-separated: seed, demo")
    parser.add_argument("--repeats", type=_count(1), default=3, help="timed repetitions of each measurement (median)")
    parser.add_argument(
        "--workers", type=_count(0), default=DEFAULT_WORKERS, help="data loader workers (the training script's default)"
    )
    # Relative to the working directory, not to the package: an installed package's folder is no place to write.
    parser.add_argument("--workdir", default="bench_work", help="models and clips (kept between runs)")
    parser.add_argument("--output", default=os.path.join("docs", "benchmarks.md"), help="the table in Markdown")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--eval-milestones",
        action="store_true",
        help="instead of the table: the training's steps/s without and with --eval_milestones, side by side "
        "(llava/bench_eval_milestones.py; printed only)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, force=True)
    # Every mistake on the command line is refused before the first model is built: a run takes minutes.
    configs = parse_configs(args.configs)
    device = parse_device(args.device)
    errors.check_writable(args.workdir, "--workdir")
    if not args.eval_milestones:
        check_output(args.output)
    machine = describe_machine(device)
    print(f"machine: {machine}", flush=True)
    load_at_start = os.getloadavg()
    if args.eval_milestones:
        from . import bench_eval_milestones

        summary = bench_eval_milestones.run(Path(args.workdir), device, args.repeats)
        print(describe_load(load_at_start, os.getloadavg()), flush=True)
        return summary
    results = {}
    for name in configs:
        print(f"[{name}] {_describe_shapes(SHAPES[name])}", flush=True)
        results[name] = Bench(SHAPES[name], Path(args.workdir), device, args.repeats, args.workers).run()
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    load = describe_load(load_at_start, os.getloadavg())
    print(load, flush=True)
    write_markdown(Path(args.output), machine, results, shown, load)
    print(f"written to {args.output}", flush=True)
    return results


if __name__ == "__main__":
    errors.entry_point(main)()
