"""The visual settings of a llava model, each defined once: its name (the training flag), its default, its
help text and the key the model config records it under.

`VisionSettings` is itself one of the training's argument classes (`python -m llava.train.train --help`
lists these fields with their help), and cache_features parses it too. `initialize_vision_modules` reads
any arguments object through it (a LLaVA client's own ModelArguments included); a model config's `mm_*`
keys are written and read back through it (checkpoint loading, the adapter path of
`load_pretrained_model`); the tiny test models start from it.

Adding a setting is one field here (and the code that uses it): its config key follows from its name
(`config_key`), the argument parsers and the docs' settings table follow from the field.

What the tower itself says (its config, its image processor, its width) is not a setting: the model
records it beside these when it loads the tower (`LlavaMetaModel.initialize_vision_modules`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields


def _setting(default=None, help: str = "", *, factory=None):
    """A field with its help text (the metadata is what argparse's add_argument takes)."""
    metadata = {"help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class VisionSettings:
    """The seed configuration's defaults: DINOv2's second-to-last layer, 8 frames, fast 8x2x4 + slow
    2x4x4 packer grids (96 tokens per clip), a two-layer GELU projector."""

    vision_tower: str | None = _setting(
        None, "Vision tower folder or hub id (DINOv2, CLIP, SigLIP; e.g. facebook/dinov2-large). Omit for text only."
    )
    mm_vision_select_layer: int = _setting(-2, "Hidden layer of the tower whose patch tokens are used.")
    num_frames: int = _setting(
        8,
        "Frames sampled uniformly from each clip; the packer's input grid is built for this many "
        "(LLaVA-NeXT: --frames_upbound). A model built for fewer reads its own count.",
    )
    mm_projector_type: str = _setting("mlp2x_gelu", "Projector: linear, identity or mlpNx_gelu.")
    mm_projector_hidden_size: int | None = _setting(
        None, "Hidden width of the MLP projector (seed: 2560); default the language model's width."
    )
    mm_resampler_type: str | None = _setting(
        "fast_slow_token_packer", "fast_slow_token_packer, or none to pass every patch token."
    )
    mm_fast_grid: list[int] = _setting(
        help="Fast packer track's output grid: frames rows columns (fine in time).", factory=lambda: [8, 2, 4]
    )
    mm_slow_grid: list[int] = _setting(
        help="Slow packer track's output grid: frames rows columns (fine in space).", factory=lambda: [2, 4, 4]
    )
    mm_packer_num_heads: int = _setting(8, "Attention heads of each packer track.")
    pretrain_mm_mlp_adapter: str | None = _setting(
        None, "mm_projector.bin of an adapter-only run to start from (packer, projector, embeddings)."
    )

    def __post_init__(self):
        # Flags, JSON and YAML give numbers as strings or ints, grids as lists or tuples: one form, so
        # that settings read back from a config compare equal to the ones written.
        self.num_frames = int(self.num_frames)
        self.mm_packer_num_heads = int(self.mm_packer_num_heads)
        self.mm_fast_grid = [int(g) for g in self.mm_fast_grid]
        self.mm_slow_grid = [int(g) for g in self.mm_slow_grid]

    @classmethod
    def from_args(cls, *sources) -> VisionSettings:
        """Settings from argument objects, e.g. a LLaVA client's own ModelArguments, which carries only
        some of them (no frame count, no packer grids). Each setting comes from the first object that has
        an attribute of its name, else it keeps its default."""
        if len(sources) == 1 and isinstance(sources[0], cls):
            return sources[0]
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
        """Records the settings in a model config, so that a saved checkpoint rebuilds itself with no flags."""
        for name, key in CONFIG_KEYS.items():
            setattr(config, key, getattr(self, name))

    def replace(self, **changes) -> VisionSettings:
        return dataclasses.replace(self, **changes)


def config_key(name: str) -> str:
    """The key a setting is recorded under in the model config: its name, with LLaVA's `mm_` prefix where
    the name has none (`vision_tower` -> `mm_vision_tower`, `num_frames` -> `mm_num_frames`)."""
    return name if name.startswith("mm_") else f"mm_{name}"


# Settings the config does not record: the adapter file is where training started from, and the weights it
# held are in the checkpoint.
NOT_RECORDED = ("pretrain_mm_mlp_adapter",)
# Setting -> its config key, for the settings the config records.
CONFIG_KEYS = {f.name: config_key(f.name) for f in fields(VisionSettings) if f.name not in NOT_RECORDED}
