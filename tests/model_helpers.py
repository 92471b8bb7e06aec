"""Builders shared by the model tests: tiny multimodal models of every family."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import causal_lm_class
from llava.testing import IMAGE_SIZE, TINY_LANGUAGE_CONFIGS, tiny_vision_args

FAMILIES = sorted(TINY_LANGUAGE_CONFIGS)
VIDEO_TOKENS, IMAGE_TOKENS = 96, 24  # default packer grids: 64 + 32, and 8 + 16 for one frame


def upstream_checkpoint(family, folder):
    """Saves the stock transformers model of a family (random weights) and returns it."""
    model = AutoModelForCausalLM.from_config(TINY_LANGUAGE_CONFIGS[family]()).eval()
    model.save_pretrained(folder)
    return model


def llava_model(family, folder, tower_dir, **vision_overrides):
    """A llava model of `family` started from a plain checkpoint plus the tiny tower."""
    upstream = upstream_checkpoint(family, folder)
    model = causal_lm_class(family).from_pretrained(folder)
    model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir, **vision_overrides))
    return upstream, model.eval()


def clip(frames=8):
    return torch.randn(frames, 3, IMAGE_SIZE, IMAGE_SIZE)


def prompt(*parts):
    """Token ids with IMAGE_TOKEN_INDEX wherever a part is None."""
    return [IMAGE_TOKEN_INDEX if p is None else p for p in parts]


def right_padded(rows, pad=0):
    length = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    return ids, mask


def left_padded(rows, pad=0):
    length = max(map(len, rows))
    ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def llava_checkpoint(family, folder, tokenizer_dir, tower_dir):
    """A saved llava checkpoint of `family` (tiny config, the tiny tower, a trained-looking adapter)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = TINY_LANGUAGE_CONFIGS[family]()
    config.vocab_size = len(tokenizer)
    stock = folder / "stock"
    AutoModelForCausalLM.from_config(config).save_pretrained(stock)
    model = causal_lm_class(family).from_pretrained(stock)
    model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
    with torch.no_grad():
        for p in model.get_model().mm_pos_embed.parameters():
            p.normal_()
    checkpoint = folder / "llava"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    return checkpoint
