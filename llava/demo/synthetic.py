"""A synthetic Italian video-caption data set and the tiny local models that train on it.

Each clip shows one shape, or two of the same kind, of one colour moving in one direction over a noisy
background; its caption names the count, colour, shape and direction ("un cerchio rosso si muove verso
destra", "due stelle gialle vanno verso l'alto") in one of several sentence forms, so that only watching
the clip tells which are meant. Articles, adjectives and verbs agree in gender and number with the
shape noun (grammar.py), so a model that reads the captions also learns Italian agreement. Clips are real
mp4 files (PyAV, H.264) and the annotations are LLaVA JSON, as a real data set would be.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..eval.colour_words import COLOUR_WORDS_FILE
from . import grammar

COLOURS = {
    "rosso": (220, 40, 40),
    "verde": (40, 190, 60),
    "blu": (50, 80, 230),
    "giallo": (235, 215, 40),
}
assert tuple(COLOURS) == grammar.COLOUR_WORDS
SHAPES = tuple(grammar.NOUNS)  # cerchio, quadrato, triangolo, croce, stella
COUNTS = tuple(grammar.COUNTS)  # one shape or two
_STEPS = {"destra": (1, 0), "sinistra": (-1, 0), "alto": (0, -1), "basso": (0, 1)}
# unit step in (x, y), and the Italian phrase after "verso"
DIRECTIONS = {name: (step, grammar.DIRECTION_PHRASES[name]) for name, step in _STEPS.items()}
TEMPLATES = grammar.TEMPLATES


@dataclass(frozen=True)
class ClipSpec:
    colour: str
    shape: str
    direction: str
    count: int = 1

    def caption(self, template: int) -> str:
        return grammar.caption(grammar.Subject(self.shape, self.colour, self.direction, self.count), template)

    def attributes(self) -> dict:
        return {"colour": self.colour, "shape": self.shape, "direction": self.direction, "count": self.count}


def _shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if shape == "cerchio":
        return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    if shape == "quadrato":
        return (abs(x - cx) <= radius * 0.85) & (abs(y - cy) <= radius * 0.85)
    if shape == "croce":  # an upright plus sign: two bars a third of the size wide
        bar = radius / 3
        return ((abs(x - cx) <= bar) & (abs(y - cy) <= radius)) | ((abs(y - cy) <= bar) & (abs(x - cx) <= radius))
    if shape == "stella":  # five points, one straight up: the radius swings between the tips and 0.4 of them
        angle = np.arctan2(x - cx, cy - y)
        reach = radius * (0.7 + 0.3 * np.cos(5 * angle))
        return (x - cx) ** 2 + (y - cy) ** 2 <= reach**2
    # triangle pointing up: inside the box and above both slanted edges
    top, bottom = cy - radius, cy + radius
    half_width = (y - top) / (2 * radius) * radius
    return (y >= top) & (y <= bottom) & (abs(x - cx) <= half_width)


def render_frames(spec: ClipSpec, num_frames: int = 16, size: int = 64, seed: int = 0) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 frames of the shape (or the two shapes, side by side across
    the motion) moving across the frame."""
    rng = np.random.default_rng(seed)
    (dx, dy), _ = DIRECTIONS[spec.direction]
    # two shapes are smaller, a little more than a diameter apart
    radius = size * (0.2 if spec.count == 1 else 0.14)
    offsets = [0.0] if spec.count == 1 else [-1.2 * radius, 1.2 * radius]
    travel = size * 0.5
    # start so that the whole path stays inside the frame, with a random offset across the motion
    margin = radius + 2 + max(offsets)
    across = rng.uniform(margin, size - margin)
    start_along = size / 2 - travel / 2
    background = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    colour = np.array(COLOURS[spec.colour], dtype=np.uint8)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for t in range(num_frames):
        along = start_along + travel * t / max(1, num_frames - 1)
        along = along if dx > 0 or dy > 0 else size - along
        frame = background.copy()
        for offset in offsets:
            cx, cy = (along, across + offset) if dx else (across + offset, along)
            frame[_shape_mask(spec.shape, size, cx, cy, radius)] = colour
        frames[t] = frame
    return frames


def write_clip(path, frames: np.ndarray, fps: int = 8, codec: str = "libx264", gop_size: int | None = None) -> None:
    """Writes RGB frames as a real video file (H.264 in mp4 by default); `gop_size`: frames between
    keyframes (the encoder's default where None)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        if gop_size:
            stream.codec_context.gop_size = gop_size
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def all_specs() -> list[ClipSpec]:
    return [ClipSpec(s.colour, s.shape, s.direction, s.count) for s in grammar.all_subjects()]


def make_dataset(folder, num_train: int, num_val: int, seed: int = 0, num_frames: int = 16, size: int = 64) -> dict:
    """Writes clips to `folder/videos`, LLaVA JSON to `folder/train.json` and `folder/val.json`, and the
    words of each colour in every form to `folder/colour_words.json` (what the lmms-eval colour tasks read
    captions with: llava/eval/colour_words.py).

    Returns the paths. Each sample's `attributes` name its colour, shape and direction (the masculine
    singular words) and count (1 or 2). Validation clips are new renderings (other positions and
    backgrounds) of the same attribute space.
    """
    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    specs = all_specs()
    splits = {}
    for split, count in (("train", num_train), ("val", num_val)):
        samples = []
        for i in range(count):
            spec = specs[rng.randrange(len(specs))]
            name = f"{split}_{i:05d}.mp4"
            write_clip(folder / "videos" / name, render_frames(spec, num_frames, size, seed=rng.randrange(2**31)))
            samples.append(
                {
                    "id": f"{split}_{i:05d}",
                    "video": name,
                    "conversations": [
                        {"from": "human", "value": "<video>\n"},
                        {"from": "gpt", "value": spec.caption(rng.randrange(len(TEMPLATES)))},
                    ],
                    "attributes": spec.attributes(),
                }
            )
        path = folder / f"{split}.json"
        path.write_text(json.dumps(samples, ensure_ascii=False, indent=1))
        splits[split] = str(path)
    colour_words = grammar.colour_words().save(folder / COLOUR_WORDS_FILE)
    return {"video_folder": str(folder / "videos"), **splits, "colour_words": colour_words}


def caption_corpus() -> list[str]:
    """Every caption the templates can produce: what the tokenizer is trained on."""
    return [spec.caption(t) for spec in all_specs() for t in range(len(TEMPLATES))]


def train_tokenizer(folder, texts: list[str], vocab_size: int = 512) -> str:
    """A byte-level BPE tokenizer (the kind the BAMBI GPT-2 uses), saved as a GPT-2 tokenizer folder.
    It has an end-of-text token and, like BAMBI's, no pad token."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(folder))
    tokenizer = GPT2Tokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def save_gpt2(folder, tokenizer_folder, n_layer=2, n_embd=64, n_head=4, n_positions=256, dropout=0.1, seed=0) -> str:
    """A small random GPT-2 with the tokenizer beside it, laid out like a BAMBI checkpoint folder."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)
