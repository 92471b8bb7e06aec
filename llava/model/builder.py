"""Choosing and loading a llava model from a checkpoint folder."""

from __future__ import annotations

import json
import logging
import os

from . import AVAILABLE_MODELS

logger = logging.getLogger(__name__)

# Stock transformers model types -> the llava family that wraps them.
STOCK_TO_LLAVA = {
    "gpt2": "llava_gpt2",
    "llama": "llava_llama",
    "mistral": "llava_mistral",
    "mixtral": "llava_mixtral",
    "qwen2": "llava_qwen",
    "gemma": "llava_gemma",
    "mpt": "llava_mpt",
}


def _read_model_type(model_name_or_path: str) -> str | None:
    path = os.path.join(model_name_or_path, "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f).get("model_type")
    from transformers import AutoConfig  # a hub id: let transformers find the config

    return AutoConfig.from_pretrained(model_name_or_path).model_type


def family_of(model_name_or_path: str) -> str:
    """The llava family (a key of AVAILABLE_MODELS) for a checkpoint.

    The checkpoint's own `config.json` decides (a llava type, or the stock type it wraps). Where it names
    no known family, the seed's path rule applies: 'gpt2' or 'bambi' in the path selects GPT-2.
    """
    model_type = _read_model_type(model_name_or_path)
    if model_type in AVAILABLE_MODELS:
        return model_type
    if model_type in STOCK_TO_LLAVA:
        return STOCK_TO_LLAVA[model_type]
    lowered = model_name_or_path.lower()
    if "gpt2" in lowered or "bambi" in lowered:
        logger.info("model_type %r is not a known family; the path names GPT-2", model_type)
        return "llava_gpt2"
    raise ValueError(
        f"{model_name_or_path}: model_type {model_type!r} is not one of the supported families "
        f"({', '.join(sorted(STOCK_TO_LLAVA))}, or their llava_* types)"
    )


def causal_lm_class(family: str):
    """The causal-LM class of a family, e.g. LlavaGPT2ForCausalLM for 'llava_gpt2'."""
    from .. import model as package

    return getattr(package, AVAILABLE_MODELS[family].split(", ")[0])


def load_pretrained_model(model_path: str, device: str = "cpu", dtype=None):
    """`(tokenizer, model, image_processor, context_len)` for a saved llava checkpoint of any family.

    The checkpoint's config rebuilds everything (tower, packer, projector, embeddings); the image
    processor is the tower's (None for a text-only model). The model is in eval mode on `device`.
    """
    from transformers import AutoTokenizer

    from .llava_arch import max_positions

    family = family_of(model_path)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = causal_lm_class(family).from_pretrained(model_path, **kwargs).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:  # as in training: EOS pads, masks come from lengths
        tokenizer.pad_token = tokenizer.eos_token
    tower = model.get_vision_tower()
    return tokenizer, model, (tower.image_processor if tower is not None else None), max_positions(model.config)
