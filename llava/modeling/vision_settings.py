"""The visual settings of a llava model and their defaults, in one place.

Training's flags (ModelArguments; DataArguments' frame count, which a test holds to the default here)
and cache_features' flags take their defaults from `VisionSettings`; `initialize_vision_modules` reads
any arguments object through it (a LLaVA client's own ModelArguments included); a model config's `mm_*`
keys are written and read back through it (checkpoint loading, the adapter path of
`load_pretrained_model`); the tiny test models start from it. The field names are the flag names;
`CONFIG_KEYS` maps them to the keys the model config records them under, the one mapping, used both ways.

What the tower itself says (its config, its image processor, its width) is not a setting: the model
records it beside these when it loads the tower (`LlavaMetaModel.initialize_vision_modules`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass
class VisionSettings:
    """The seed configuration's defaults: DINOv2's second-to-last layer, 8 frames, fast 8x2x4 + slow
    2x4x4 packer grids (96 tokens per clip), a two-layer GELU projector."""

    vision_tower: str | None = None  # folder or hub id; None: no visual modules
    mm_vision_select_layer: int = -2
    num_frames: int = 8  # frames per clip: the packer's input grid is built for this many
    mm_projector_type: str = "mlp2x_gelu"
    mm_projector_hidden_size: int | None = None  # None: the language model's hidden size
    mm_resampler_type: str | None = "fast_slow_token_packer"  # None or "none": every patch token
    mm_fast_grid: tuple[int, int, int] = (8, 2, 4)  # frames, rows, columns
    mm_slow_grid: tuple[int, int, int] = (2, 4, 4)
    mm_packer_num_heads: int = 8
    pretrain_mm_mlp_adapter: str | None = None  # adapter file (mm_projector.bin) to start from

    def __post_init__(self):
        # Flags give lists and JSON gives lists; one form, so that settings read back compare equal.
        self.num_frames = int(self.num_frames)
        self.mm_packer_num_heads = int(self.mm_packer_num_heads)
        self.mm_fast_grid = tuple(int(g) for g in self.mm_fast_grid)
        self.mm_slow_grid = tuple(int(g) for g in self.mm_slow_grid)

    @classmethod
    def from_args(cls, *sources) -> VisionSettings:
        """Settings from argument objects: training's ModelArguments and DataArguments, or a LLaVA client's
        own ModelArguments, which carries only some of them (no frame count, no packer grids). Each setting
        comes from the first object that has an attribute of its name, else it keeps its default."""
        values = {}
        for f in fields(cls):
            source = next((s for s in sources if hasattr(s, f.name)), None)
            if source is not None:
                values[f.name] = getattr(source, f.name)
        return cls(**values)

    @classmethod
    def from_config(cls, config) -> VisionSettings:
        """Settings recorded in a model config (a config object, or config.json as a dict); a key the
        config lacks keeps its default. `vision_tower` is None for a plain language model."""
        recorded = config if isinstance(config, Mapping) else vars(config)
        return cls(**{name: recorded[key] for name, key in CONFIG_KEYS.items() if key in recorded})

    def write(self, config) -> None:
        """Records the settings in a model config, as JSON holds them (grids as lists), so that a saved
        checkpoint rebuilds itself with no flags."""
        for name, key in CONFIG_KEYS.items():
            value = getattr(self, name)
            setattr(config, key, list(value) if isinstance(value, tuple) else value)

    def replace(self, **changes) -> VisionSettings:
        return dataclasses.replace(self, **changes)


# Setting -> the key the model config records it under. The adapter file is not recorded: the weights
# it held are in the checkpoint.
CONFIG_KEYS = {
    "vision_tower": "mm_vision_tower",
    "mm_vision_select_layer": "mm_vision_select_layer",
    "num_frames": "mm_num_frames",
    "mm_projector_type": "mm_projector_type",
    "mm_projector_hidden_size": "mm_projector_hidden_size",
    "mm_resampler_type": "mm_resampler_type",
    "mm_fast_grid": "mm_fast_grid",
    "mm_slow_grid": "mm_slow_grid",
    "mm_packer_num_heads": "mm_packer_num_heads",
}
