"""Placeholder-aware tokenization, image/video preprocessing and a keyword stopping criterion.

`tokenizer_image_token` keeps LLaVA's signature and behaviour: the prompt is split on the `<image>` and
`<video>` placeholders, each text chunk is tokenized on its own, and every placeholder becomes one
`IMAGE_TOKEN_INDEX`, which the model later replaces with the visual block. A tokenizer that adds a BOS
token by default gets exactly one, at the start.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from transformers import StoppingCriteria

from .constants import DEFAULT_IMAGE_TOKEN, DEFAULT_VIDEO_TOKEN, IMAGE_TOKEN_INDEX

# Capturing group: re.split keeps the placeholders, so chunk offsets into the text stay known.
PLACEHOLDER_PATTERN = re.compile(f"({re.escape(DEFAULT_IMAGE_TOKEN)}|{re.escape(DEFAULT_VIDEO_TOKEN)})")


def count_placeholders(text: str) -> int:
    return len(PLACEHOLDER_PATTERN.findall(text))


def bos_prefix(tokenizer) -> list[int]:
    """[bos_id] where the tokenizer adds a BOS token by default (Llama, Gemma), else [] (GPT-2, Qwen)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("a").input_ids
    return [bos] if ids and ids[0] == bos else []


def tokenize_with_placeholders(text: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX, offsets: bool = False):
    """Tokenizes `text` without special tokens, each placeholder becoming `image_token_index`.

    With `offsets=True` returns `(ids, spans)` where `spans[i]` is token i's (start, end) character span in
    `text` (a placeholder's own span for the placeholder id); this needs a tokenizers-backed tokenizer.
    """
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    position = 0
    for chunk in PLACEHOLDER_PATTERN.split(text):
        if PLACEHOLDER_PATTERN.fullmatch(chunk):
            ids.append(image_token_index)
            spans.append((position, position + len(chunk)))
        elif chunk:
            if offsets:
                try:
                    enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
                except NotImplementedError as e:
                    raise TypeError(
                        f"{type(tokenizer).__name__} cannot report token offsets; chat templates need a "
                        "tokenizers-backed (fast) tokenizer"
                    ) from e
                spans.extend((position + a, position + b) for a, b in enc["offset_mapping"])
            else:
                enc = tokenizer(chunk, add_special_tokens=False)
            ids.extend(enc["input_ids"])
        position += len(chunk)
    return (ids, spans) if offsets else ids


def tokenizer_image_token(prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX, return_tensors=None):
    """LLaVA's `tokenizer_image_token`: ids of `prompt` with one `image_token_index` per placeholder."""
    ids = bos_prefix(tokenizer) + tokenize_with_placeholders(prompt, tokenizer, image_token_index)
    if return_tensors is None:
        return ids
    if return_tensors == "pt":
        return torch.tensor(ids, dtype=torch.long)
    raise ValueError(f"unsupported return_tensors {return_tensors!r} (only 'pt' or None)")


def process_video_frames(frames, image_processor) -> torch.FloatTensor:
    """(T, H, W, 3) uint8 frames (numpy or torch) -> (T, 3, S, S) float pixels from the tower's processor."""
    if isinstance(frames, torch.Tensor):
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    pixels = image_processor(list(frames), return_tensors="pt")["pixel_values"]
    return pixels.float()


def process_images(images, image_processor) -> torch.FloatTensor:
    """PIL images or (H, W, 3) uint8 arrays -> (N, 3, S, S) float pixels; each image is later one frame."""
    from PIL import Image

    prepared = [img.convert("RGB") if isinstance(img, Image.Image) else np.asarray(img) for img in images]
    return image_processor(prepared, return_tensors="pt")["pixel_values"].float()


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stops a sequence once its generated text contains one of `keywords` (LLaVA's criterion, batched).

    `input_ids`, where given, is the prompt: its tokens are never searched (generate with `inputs_embeds`
    returns only new tokens, so it is usually left out). Only a short tail is decoded at each step.
    """

    def __init__(self, keywords: list[str], tokenizer, input_ids=None):
        self.keywords = list(keywords)
        self.tokenizer = tokenizer
        self.start_len = 0 if input_ids is None else int(input_ids.shape[-1])
        # Enough tokens to spell the longest keyword, plus slack for merges at its edges.
        self.tail = max(len(tokenizer(k, add_special_tokens=False).input_ids) for k in self.keywords) + 2

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        done = []
        for row in input_ids:
            tail = row[self.start_len :][-self.tail :]
            text = self.tokenizer.decode(tail[tail >= 0], skip_special_tokens=False)
            done.append(any(k in text for k in self.keywords))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
