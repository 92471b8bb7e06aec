"""The forms in which callers pass visual inputs (`images=` of forward and generate), made one: a list of
clips, each `(T, 3, S, S)` pixels or `{"patch_features": (T, grid, grid, hidden)}` tower features; and
transformers' form (`pixel_values=` beside ids that hold the processor's image token, or none), turned
into ours."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


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


def from_pixel_values(pixel_values, input_ids, attention_mask, labels, image_token_index):
    """Transformers' calling convention in ours: `(images, input_ids, attention_mask, labels)`.

    `pixel_values` is what the processor returns: `(N, 3, S, S)` images or `(N, T, 3, S, S)` clips. The
    processor's image token (`image_token_index`, a tokenizer id that the model never embeds) marks where each
    goes; ids without one get the visual block prepended to every row (one image per row), which is where
    callers that pass pixels beside plain text expect it: the BabyLM pipeline then reads the last
    text-length positions of the logits.
    """
    if pixel_values.ndim not in (4, 5):
        raise ValueError(
            f"pixel_values of shape {tuple(pixel_values.shape)}; expected (N, 3, S, S) images or (N, T, 3, S, S) clips"
        )
    if image_token_index is not None:
        input_ids = input_ids.masked_fill(input_ids == image_token_index, IMAGE_TOKEN_INDEX)
    if not bool((input_ids == IMAGE_TOKEN_INDEX).any()):
        rows = input_ids.shape[0]
        if pixel_values.shape[0] != rows:
            raise ValueError(
                f"{pixel_values.shape[0]} visual inputs for {rows} rows without an image token: "
                "pass one per row, or mark where each goes with the processor's image token"
            )
        column = input_ids.new_full((rows, 1), IMAGE_TOKEN_INDEX)
        input_ids = torch.cat([column, input_ids], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones((rows, 1)), attention_mask], dim=1)
        if labels is not None:
            labels = torch.cat([labels.new_full((rows, 1), IGNORE_INDEX), labels], dim=1)
    return list(pixel_values), input_ids, attention_mask, labels


# How far below each position's highest logit the image token's column lies: exp(-IMAGE_TOKEN_GAP / T)
# is exactly 0 in float32 for every temperature T below 9.6 (the BabyLM pipeline sweeps 0 to 3 or so),
# so every other token's log-probability is unchanged; finite, so that a masked-out position scores
# 0 * it = 0, never NaN; no further down than needed, so that a sum that includes it (the pipeline scores
# the image token itself when a BOS precedes it, the same amount for every candidate) keeps its precision.
IMAGE_TOKEN_GAP = 1000.0


def cover_image_token(logits: torch.Tensor, image_token_index: int) -> torch.Tensor:
    """Logits widened to hold the image token's id. The processor's image token lies past the language
    model's vocabulary; callers that gather every target's log-probability before masking (the BabyLM
    pipeline, when a BOS precedes the image token) index its column, which then exists and is never
    chosen."""
    missing = image_token_index + 1 - logits.shape[-1]
    if missing <= 0:
        return logits
    filler = (logits.amax(dim=-1, keepdim=True) - IMAGE_TOKEN_GAP).expand(*logits.shape[:-1], missing)
    return torch.cat([logits, filler], dim=-1)


def encoder_view(model) -> SimpleNamespace:
    """`model.git`: the vision encoder under the name the BabyLM pipeline's DevBench runner looks it up by
    (its model type `git`, `model.git.image_encoder`). That runner scores a picture and a caption by the
    loss of `model(input_ids, pixel_values, labels)` with the picture before the text, which is what
    `forward(pixel_values=...)` does without an image token. A view, not a module: no weights are added."""
    return SimpleNamespace(image_encoder=model.get_vision_tower())
