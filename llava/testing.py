"""Tiny random models for tests and checks: every family's language model and every tower kind, small
enough to run in milliseconds on a CPU, saved with `save_pretrained` like the real ones; and the DINOv2
shapes of the benchmarks, the GPU checks and the demo. Importing it loads neither torch nor transformers
(the benchmark's --help reads the shapes)."""

from __future__ import annotations

import functools

from .modeling.families import BY_LLAVA_TYPE
from .modeling.vision_settings import VisionSettings

VOCAB = 128
SPECIAL_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def tiny_language_config(family: str):
    """The stock transformers config (GPT2Config, LlamaConfig, ...) of a tiny model of `family` (a llava
    model_type), with the sizes its row in llava.modeling.families gives."""
    from transformers import AutoConfig

    row = BY_LLAVA_TYPE[family]
    return AutoConfig.for_model(row.stock_type, **row.tiny_config, vocab_size=VOCAB, **SPECIAL_IDS)


# llava model_type -> a function returning its tiny stock config.
TINY_LANGUAGE_CONFIGS = {family: functools.partial(tiny_language_config, family) for family in BY_LLAVA_TYPE}

# 56-pixel inputs in 7-pixel patches: an 8x8 grid, which the default packer grids (8x2x4, 2x4x4) tile.
IMAGE_SIZE, PATCH_SIZE = 56, 7
_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _tiny_tower(kind: str):
    """(a random tower of `kind`, its image processor) at IMAGE_SIZE."""
    import transformers as t

    sizes = dict(_TOWER, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    crop = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    if kind == "dinov2":
        return t.Dinov2Model(t.Dinov2Config(**sizes)), t.BitImageProcessorPil(
            size={"shortest_edge": 64}, crop_size=crop
        )
    if kind == "clip":
        processor = t.CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=crop)
        return t.CLIPVisionModel(t.CLIPVisionConfig(**sizes)), processor
    return t.SiglipVisionModel(t.SiglipVisionConfig(**sizes)), t.SiglipImageProcessorPil(size=crop)


# tower kind -> a function returning (a random tiny tower, its image processor).
TINY_TOWERS = {kind: functools.partial(_tiny_tower, kind) for kind in ("dinov2", "clip", "siglip")}


# DINOv2 towers with random weights, by their Dinov2Config sizes (its MLP is mlp_ratio = 4 times the width):
# facebook/dinov2-large's shape, for benchmarks and GPU checks at the seed's cost, and the demo's tower.
DINOV2_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=14, image_size=518)
DEMO_DINOV2 = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=7, image_size=56)


def save_dinov2(folder, sizes: dict, crop: int = 224, resize: int = 256, seed: int = 0) -> str:
    """A random DINOv2 of `sizes` and its image processor (the short side resized to `resize`, then a
    centre crop of `crop` pixels: facebook/dinov2-large's are 256 and 224), saved like the real one."""
    import torch
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(**sizes)).save_pretrained(folder)
    processor = BitImageProcessorPil(size={"shortest_edge": resize}, crop_size={"height": crop, "width": crop})
    processor.save_pretrained(folder)
    return str(folder)


def save_tiny_vision_tower(folder, kind: str = "dinov2", seed: int = 0) -> str:
    """Writes a random tower and its image processor to `folder`, as `save_pretrained` lays out a real one."""
    import torch

    torch.manual_seed(seed)
    model, processor = TINY_TOWERS[kind]()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def tiny_vision_args(tower_path: str, **overrides) -> VisionSettings:
    """Vision settings for `initialize_vision_modules` that fit the tiny towers: the defaults, with a
    narrower projector and fewer packer heads for the towers' width of 32."""
    return VisionSettings(vision_tower=str(tower_path), mm_projector_hidden_size=48, mm_packer_num_heads=4).replace(
        **overrides
    )
