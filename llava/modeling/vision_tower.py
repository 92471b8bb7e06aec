"""Frozen image encoders (DINOv2, CLIP, SigLIP) through transformers, returning patch-token grids.

A tower is described by two dictionaries that live in the LLaVA model config: the encoder's own config
(`mm_vision_config`) and its image processor's config (`mm_image_processor`). With them a saved
checkpoint rebuilds its tower with no access to the folder the tower first came from; the weights come
from the checkpoint itself.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    CLIPVisionModel,
    Dinov2Model,
    Dinov2WithRegistersModel,
    SiglipVisionModel,
)


@dataclass(frozen=True)
class _TowerKind:
    model_class: type
    # Tokens before the patch grid in the encoder's hidden states (CLS, registers).
    prefix_tokens: callable


TOWER_KINDS = {
    "dinov2": _TowerKind(Dinov2Model, lambda cfg: 1),
    "dinov2_with_registers": _TowerKind(Dinov2WithRegistersModel, lambda cfg: 1 + cfg.num_register_tokens),
    "clip_vision_model": _TowerKind(CLIPVisionModel, lambda cfg: 1),
    "siglip_vision_model": _TowerKind(SiglipVisionModel, lambda cfg: 0),
}
# Full CLIP/SigLIP checkpoints hold a text tower too; only their vision half is used.
_COMPOSITE_TYPES = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}


def _vision_config(config):
    if config.model_type in _COMPOSITE_TYPES:
        return config.vision_config
    if config.model_type not in TOWER_KINDS:
        raise ValueError(
            f"unsupported vision tower type {config.model_type!r}; supported: "
            f"{sorted(TOWER_KINDS) + sorted(_COMPOSITE_TYPES)}"
        )
    return config


def image_processor_from_dict(processor_dict: dict):
    # transformers resolves the processor class (and its backend: torchvision where installed, PIL
    # otherwise) only through from_pretrained, so the stored dictionary goes through a folder.
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
            json.dump(processor_dict, f)
        return AutoImageProcessor.from_pretrained(folder)


class VisionTower(nn.Module):
    """Wraps a transformers image encoder; `forward` maps pixels to the patch tokens of one layer."""

    def __init__(self, encoder: nn.Module, image_processor, select_layer: int):
        super().__init__()
        self.vision_tower = encoder
        self.image_processor = image_processor
        self.select_layer = select_layer
        kind = TOWER_KINDS[encoder.config.model_type]
        self.num_prefix_tokens = kind.prefix_tokens(encoder.config)
        num_layers = encoder.config.num_hidden_layers
        if not -num_layers - 1 <= select_layer <= num_layers:
            raise ValueError(
                f"mm_vision_select_layer={select_layer} is outside the tower's hidden states "
                f"(valid: {-num_layers - 1} .. {num_layers})"
            )

    @classmethod
    def from_pretrained(cls, path: str, select_layer: int) -> VisionTower:
        """Loads the encoder's weights and its image processor from a local folder or hub id."""
        config = _vision_config(AutoConfig.from_pretrained(path))
        encoder = TOWER_KINDS[config.model_type].model_class.from_pretrained(path, config=config)
        return cls(encoder, AutoImageProcessor.from_pretrained(path), select_layer)

    @classmethod
    def from_config(cls, vision_config: dict, processor_dict: dict, select_layer: int) -> VisionTower:
        """Builds the architecture only; the weights are expected to come from a checkpoint."""
        config = AutoConfig.for_model(**vision_config)
        encoder = TOWER_KINDS[config.model_type].model_class(config)
        return cls(encoder, image_processor_from_dict(processor_dict), select_layer)

    @property
    def config(self):
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def image_size(self) -> int:
        """Side of the square input the image processor produces (not the encoder's config: DINOv2
        says 518 there, interpolates its position embeddings, and is fed 224-pixel crops)."""
        return processor_output_size(self.image_processor)

    @property
    def grid_size(self) -> int:
        """Patches per side of the processed input."""
        return self.image_size // self.config.patch_size

    # LLaVA's tower surface, for client code that sizes prompts or buffers from it.
    @property
    def num_patches_per_side(self) -> int:
        return self.grid_size

    @property
    def num_patches(self) -> int:
        """Patch tokens of one image (one frame) before the packer."""
        return self.grid_size**2

    @property
    def is_loaded(self) -> bool:
        return True

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vision_tower.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.vision_tower.parameters()).device

    @property
    def is_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.vision_tower.parameters())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) pixels -> (N, grid, grid, hidden) patch tokens of the selected layer.

        The layer's tokens are taken by a hook on that layer, not from `output_hidden_states`: transformers 5
        records hidden states with hooks of its own, and once the language model around the tower records
        its hidden states, it has hooked the tower's layers a second time, so that the tower's list holds
        each layer twice and an index into it picks another layer."""
        layers = _encoder_layers(self.vision_tower)
        state = self.select_layer % (len(layers) + 1)  # hidden state k: the input of layer 0, else layer k-1's output
        taken = []
        if state == 0:
            handle = layers[0].register_forward_pre_hook(
                lambda _m, args, kwargs: taken.append(_first(args, kwargs)), with_kwargs=True
            )
        else:
            handle = layers[state - 1].register_forward_hook(lambda _m, _a, out: taken.append(_first((out,), {})))
        try:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.is_frozen):
                self.vision_tower(pixel_values.to(dtype=self.dtype))
        finally:
            handle.remove()
        tokens = taken[0][:, self.num_prefix_tokens :]
        n, length, hidden = tokens.shape
        side = int(round(length**0.5))
        if side * side != length:
            raise ValueError(f"vision tower returned {length} patch tokens, which is not a square grid")
        return tokens.reshape(n, side, side, hidden)


def _encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer layers, in order (DINOv2: encoder.layer; CLIP, SigLIP: vision_model.encoder.layers)."""
    inner = getattr(encoder, "vision_model", encoder).encoder
    return inner.layer if hasattr(inner, "layer") else inner.layers


def _first(args: tuple, kwargs: dict) -> torch.Tensor:
    """A layer's hidden states among its inputs, or its output (a tensor, or a tuple that starts with it)."""
    value = args[0] if args else kwargs["hidden_states"]
    return value[0] if isinstance(value, tuple) else value


# Keys of a tower's config that say nothing about its architecture.
_INCIDENTAL_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures"}


def tower_architecture(tower_config: dict) -> dict:
    """A tower config as JSON would hold it, without the keys that say nothing about the architecture."""
    return {k: v for k, v in json.loads(json.dumps(tower_config)).items() if k not in _INCIDENTAL_CONFIG_KEYS}


def processor_output_size(processor) -> int:
    size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
    size = dict(size)
    if "height" in size and "width" in size:
        if size["height"] != size["width"]:
            raise ValueError(f"image processor produces non-square {size['height']}x{size['width']} inputs")
        return size["height"]
    if "shortest_edge" in size:
        return size["shortest_edge"]
    raise ValueError(f"cannot tell the image processor's output size from {size}")


def load_vision_tower_from_checkpoint(folder: str, config) -> VisionTower:
    """The tower of a saved llava checkpoint with its trained weights, without loading the language
    model (the tower's keys are read from the checkpoint's safetensors files alone)."""
    import glob

    from safetensors import safe_open

    tower = build_vision_tower(config)
    renamings = _stored_renamings(config.model_type)
    state = {}
    for file in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        with safe_open(file, framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safetensors' safe_open is not iterable
                # 'transformer.vision_tower.vision_tower.embeddings...' -> 'vision_tower.embeddings...'
                if "vision_tower." in key:
                    name = key.split("vision_tower.", 1)[1]
                    for source, target in renamings:
                        name = re.sub(source, target, name)
                    state[name] = f.get_tensor(key)
    missing, unexpected = tower.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{folder}: the checkpoint's tower weights do not fit its config "
            f"({len(missing)} missing, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
    return tower


def _stored_renamings(model_type: str) -> list[tuple[str, str]]:
    """The key renamings transformers applies when it loads a checkpoint of the family (stored name ->
    name in the model). Saving applies them backwards to every key, the tower's included: a Mixtral
    checkpoint stores the tower's `.mlp.` as `.block_sparse_moe.`, and reading its keys alone must undo it."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    from .families import LLAVA_TO_STOCK

    renamings = []
    for rule in get_checkpoint_conversion_mapping(LLAVA_TO_STOCK.get(model_type, model_type)) or []:
        if type(rule).__name__ == "WeightRenaming":
            renamings += list(zip(rule.source_patterns, rule.target_patterns))
    return renamings


def build_vision_tower(config) -> VisionTower:
    """Rebuilds the tower described by a LLaVA model config (architecture only)."""
    return VisionTower.from_config(config.mm_vision_config, config.mm_image_processor, config.mm_vision_select_layer)
