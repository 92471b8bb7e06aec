"""The configurations --configs chooses from: the shapes of their models, clips and batches."""

from __future__ import annotations

from dataclasses import dataclass

from ..testing import DEMO_DINOV2, DINOV2_LARGE

# Frames sampled from each clip, as the headline recipe's --num_frames.
NUM_FRAMES = 8


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


# GPT2Config arguments (the towers' are llava.testing's). The seed: a BabyLM-scale GPT-2 and a
# DINOv2-large-shaped tower. The demo: the `make demo` model (its vocabulary is the size of the tokenizer
# trained on its captions).
_SEED_GPT2 = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=30000)
_DEMO_GPT2 = dict(n_layer=4, n_embd=128, n_head=4, n_positions=256)

# One row per configuration, its fields in Shapes' order: name, GPT-2, tower, crop, resize, projector
# hidden size, clips, batch size, clip width x height, clip seconds, fps. Web-like clips for the seed
# (640x360, 25 fps, 10 s), the demo's own for the demo. Keyed by each row's name, so a name is written once.
SHAPES = {
    shapes.name: shapes
    for shapes in (
        Shapes("seed", _SEED_GPT2, DINOV2_LARGE, 224, 256, 2560, 4, 2, (640, 360), 10.0, 25),
        Shapes("demo", _DEMO_GPT2, DEMO_DINOV2, 56, 64, 128, 16, 8, (64, 64), 2.0, 8),
    )
}


def describe_shapes(s: Shapes) -> str:
    """One line for the table's section and the run's log."""
    g, t = s.gpt2, s.tower
    vocab = f", vocabulary {g['vocab_size']}" if "vocab_size" in g else ""
    return (
        f"GPT-2 {g['n_layer']}x{g['n_embd']}{vocab}; DINOv2-shaped tower {t['num_hidden_layers']}x{t['hidden_size']} "
        f"(random weights) on {s.crop}-pixel crops; {NUM_FRAMES} frames; packer 64 + 32 tokens; projector -> "
        f"{s.projector_hidden} -> {g['n_embd']}; batch {s.batch_size}; {s.num_clips} clips."
    )
