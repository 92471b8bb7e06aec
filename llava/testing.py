"""Tiny random models for tests and checks: every family's language model and every tower kind, small
enough to run in milliseconds on a CPU, saved with `save_pretrained` like the real ones."""

from __future__ import annotations

import functools

import torch
from transformers import (
    AutoConfig,
    BitImageProcessorPil,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from .modeling.families import BY_LLAVA_TYPE
from .modeling.vision_settings import VisionSettings

VOCAB = 128
SPECIAL_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def tiny_language_config(family: str):
    """The stock transformers config (GPT2Config, LlamaConfig, ...) of a tiny model of `family` (a llava
    model_type), with the sizes its row in llava.modeling.families gives."""
    row = BY_LLAVA_TYPE[family]
    return AutoConfig.for_model(row.stock_type, **row.tiny_config, vocab_size=VOCAB, **SPECIAL_IDS)


# llava model_type -> a function returning its tiny stock config.
TINY_LANGUAGE_CONFIGS = {family: functools.partial(tiny_language_config, family) for family in BY_LLAVA_TYPE}

# 56-pixel inputs in 7-pixel patches: an 8x8 grid, which the default packer grids (8x2x4, 2x4x4) tile.
IMAGE_SIZE, PATCH_SIZE = 56, 7
_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _bit_processor():
    return BitImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


TINY_TOWERS = {
    "dinov2": lambda: (
        Dinov2Model(Dinov2Config(**_TOWER, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)),
        _bit_processor(),
    ),
    "clip": lambda: (
        CLIPVisionModel(CLIPVisionConfig(**_TOWER, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)),
        CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        ),
    ),
    "siglip": lambda: (
        SiglipVisionModel(SiglipVisionConfig(**_TOWER, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)),
        SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
    ),
}


def save_tiny_vision_tower(folder, kind: str = "dinov2", seed: int = 0) -> str:
    """Writes a random tower and its image processor to `folder`, as `save_pretrained` lays out a real one."""
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
