"""The adapter's weights on their own: what `mm_projector.bin` holds when only the adapter trains (LLaVA's
pretraining stage), and how such a file, ours or LLaVA's, is loaded into a model."""

from __future__ import annotations

import logging
import os

import torch
from safetensors.torch import load_file

from .zero3 import gathered_parameters

logger = logging.getLogger(__name__)

# The modules of a llava base model trained as "the adapter" and saved to mm_projector.bin when only they train.
ADAPTER_MODULES = ("vision_resampler", "mm_projector", "mm_pos_embed")


def adapter_state_dict(base_model) -> dict[str, torch.Tensor]:
    """Resampler, projector and embedding weights of a llava base model (`model.get_model()`), keyed
    relative to it."""
    return {
        f"{name}.{key}": value
        for name in ADAPTER_MODULES
        for key, value in getattr(base_model, name).state_dict().items()
    }


def load_adapter_weights(base_model, path: str) -> None:
    """Loads an adapter file (mm_projector.bin or .safetensors) into a llava base model; keys may carry any
    prefix before the module name, as LLaVA's own files do (`model.mm_projector.0.weight`)."""
    if path.endswith(".safetensors"):
        weights = load_file(path)
    else:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    for name in ADAPTER_MODULES:
        marker = f"{name}."
        part = {k.split(marker, 1)[1]: v for k, v in weights.items() if marker in k}
        module = getattr(base_model, name)
        if not part and not any(True for _ in module.parameters()):
            continue
        with gathered_parameters(module, modify=True):
            missing, unexpected = module.load_state_dict(part, strict=False)
            if missing or unexpected:
                raise ValueError(
                    f"{os.path.basename(path)} does not fit {name}: missing {missing}, unexpected {unexpected}"
                )
    logger.info("loaded adapter weights from %s", path)
