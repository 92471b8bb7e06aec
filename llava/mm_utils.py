"""Placeholder-aware tokenization, image/video preprocessing and a keyword stopping criterion.

`tokenizer_image_token` keeps LLaVA's signature and behaviour: the prompt is split on the `<image>` and
`<video>` placeholders, each text chunk is tokenized on its own, and every placeholder becomes one
`IMAGE_TOKEN_INDEX`, which the model later replaces with the visual block. A tokenizer that adds a BOS
token by default gets exactly one, at the start.
"""

from __future__ import annotations

import torch
from transformers import StoppingCriteria

from .constants import IMAGE_TOKEN_INDEX, PLACEHOLDER_PATTERN

# Re-exported: callers import the aspect-ratio helpers from here, as from LLaVA's mm_utils.
from .modeling.processing_llava import (  # noqa: F401
    ASPECT_RATIO_MODES,
    expand_to_square,
    frame_pixels,
    image_aspect_ratio,
    image_pixels,
)


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
    return frame_pixels(frames, image_processor)


def process_images(images, image_processor, model_cfg=None) -> torch.FloatTensor:
    """LLaVA's `process_images`: PIL images or (H, W, 3) uint8 arrays -> (N, 3, S, S) float pixels, each
    image later one frame. `model_cfg.image_aspect_ratio == "pad"` letterboxes each image onto a square
    of the processor's mean colour first, so that the centre crop keeps all of it."""
    return image_pixels(images, image_processor, image_aspect_ratio(model_cfg))


def get_model_name_from_path(model_path: str) -> str:
    """LLaVA's model name of a checkpoint path: its last folder, prefixed by the run's folder for a
    `checkpoint-N` inside a run (`runs/llava-x/checkpoint-500` -> `llava-x_checkpoint-500`)."""
    parts = str(model_path).strip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stops a sequence once its generated text contains one of `keywords` (LLaVA's criterion, batched).

    `input_ids`, where given, is the prompt. Its tokens are never searched, whichever form `generate`
    hands over: the prompt followed by the new tokens (generation from ids) or the new tokens alone
    (generation with `images`, which runs from embeddings, as LLaVA's does). A row that starts with its
    prompt is searched after it; any other row holds new tokens only. Only a short tail is decoded.
    """

    def __init__(self, keywords: list[str], tokenizer, input_ids=None):
        # An empty keyword would match at once: LLaVA templates whose stop text is empty (mistral_instruct's
        # `sep`) rely on EOS instead.
        self.keywords = [k for k in ([keywords] if isinstance(keywords, str) else keywords) if k]
        self.tokenizer = tokenizer
        prompts = None if input_ids is None else torch.as_tensor(input_ids).cpu()
        self.prompts = prompts.unsqueeze(0) if prompts is not None and prompts.ndim == 1 else prompts
        # Enough tokens to spell the longest keyword, plus slack for merges at its edges.
        self.tail = max((len(tokenizer(k, add_special_tokens=False).input_ids) for k in self.keywords), default=0) + 2

    def _new_tokens(self, row: torch.Tensor, index: int) -> torch.Tensor:
        if self.prompts is None:
            return row
        prompt = self.prompts[min(index, len(self.prompts) - 1)]
        n = prompt.shape[0]
        return row[n:] if row.shape[0] >= n and torch.equal(row[:n].cpu(), prompt) else row

    def _has_keyword(self, row: torch.Tensor, index: int) -> bool:
        tail = self._new_tokens(row, index)[-self.tail :]
        text = self.tokenizer.decode(tail[tail >= 0], skip_special_tokens=False)
        return any(k in text for k in self.keywords)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        done = [bool(self.keywords) and self._has_keyword(row, index) for index, row in enumerate(input_ids)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
