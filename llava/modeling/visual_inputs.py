"""The forms in which callers pass visual inputs (`images=` of forward and generate), made one: a list of
clips, each `(T, 3, S, S)` pixels or `{"patch_features": (T, grid, grid, hidden)}` tower features."""

from __future__ import annotations

import torch


def as_clips(images, modalities) -> list:
    """Normalizes the accepted forms of `images` into a list of (T, 3, S, S) clips. `modalities` is one
    'image'/'video' per entry, or one string for all of them (lmms-eval passes `modalities="video"`)."""
    if isinstance(images, torch.Tensor):
        images = list(images) if images.ndim in (4, 5) else [images]
    if isinstance(modalities, str):
        modalities = [modalities] * len(images)
    clips = []
    for i, item in enumerate(images):
        modality = modalities[i] if modalities is not None and i < len(modalities) else None
        if isinstance(item, dict):  # tower features computed beforehand
            grid = item["patch_features"]
            if grid.ndim != 4:
                raise ValueError(
                    f"visual input {i}: patch_features of shape {tuple(grid.shape)}; expected (T, grid, grid, hidden)"
                )
            if modality == "image" and grid.shape[0] != 1:
                raise ValueError(
                    f"visual input {i} is marked 'image' but its patch_features hold {grid.shape[0]} frames"
                )
            clips.append(item)
            continue
        if item.ndim == 3:
            item = item.unsqueeze(0)
        if item.ndim != 4:
            raise ValueError(f"visual input {i} has shape {tuple(item.shape)}; expected (T, 3, S, S) or (3, S, S)")
        if modality == "image" and item.shape[0] != 1:
            raise ValueError(
                f"visual input {i} is marked 'image' but holds {item.shape[0]} frames; "
                "multi-patch images are not supported, mark clips as 'video'"
            )
        clips.append(item)
    return clips
