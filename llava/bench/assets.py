"""What the benchmark measures on, written under --workdir and kept between runs: each configuration's
clips and captions (LLaVA JSON), tokenizer, GPT-2 and tower folders, and the training flags naming them."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from .configs import NUM_FRAMES, Shapes


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
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from ..demo.synthetic import ClipSpec, all_specs, caption_corpus, render_frames, train_tokenizer, write_clip
    from ..testing import save_dinov2

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
    save_dinov2(folder / "tower", shapes.tower, crop=shapes.crop, resize=shapes.resize)
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


def train_argv(shapes: Shapes, assets: dict, workdir: Path, cache: str | None = None) -> list[str]:
    """The training script's flags for these assets (with `cache`, its --feature_cache)."""
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
        str(NUM_FRAMES),
        "--mm_projector_hidden_size",
        str(shapes.projector_hidden),
        "--output_dir",
        str(workdir / shapes.name / "unused-output"),
        "--disable_tqdm",
        "True",
    ]
    return argv + (["--feature_cache", cache] if cache else [])
