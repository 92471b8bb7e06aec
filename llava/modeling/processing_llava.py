"""Pixels from pictures, and the processor an exported checkpoint carries.

`image_pixels` and `frame_pixels` are the one place where images and video frames become the tower's input
(LLaVA's `process_images` and the data pipeline call them). `LlavaFramesProcessor` is what
`AutoProcessor.from_pretrained(folder, trust_remote_code=True)` returns for a folder written by
`python -m llava.eval.babylm export`: `processor(text=..., images=...)` or `processor(text=...,
videos=frames)` gives `input_ids`, `attention_mask` (and `offset_mapping` when asked) and `pixel_values`,
which the model's `forward(pixel_values=...)` takes. The tokenizer's `image_token` (`<image>`) marks where a
picture goes; text without it gets the picture before it (see visual_inputs.from_pixel_values).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

# Values of LLaVA's `image_aspect_ratio` that preprocess an image into one tower input. LLaVA's others
# (anyres*, highres, crop_split) cut an image into several tiles; here an image is one frame of the
# packer's grid, so they cannot apply.
ASPECT_RATIO_MODES = ("square", "pad")
PROCESSOR_FILE = "processor_config.json"
# The module an exported folder's auto_map names (auto_classes.py: it imports every module of the folder).
AUTO_MODULE = "auto_classes"


def image_aspect_ratio(model_cfg) -> str:
    """The `image_aspect_ratio` a model config (or LLaVA data arguments) asks for; `square` when unset."""
    mode = getattr(model_cfg, "image_aspect_ratio", None) if model_cfg is not None else None
    return checked_aspect_ratio(mode or "square")


def checked_aspect_ratio(mode: str) -> str:
    if mode not in ASPECT_RATIO_MODES:
        raise ValueError(
            f"image_aspect_ratio {mode!r} is not supported: an image is one frame at the tower's input size "
            f"here, not a set of tiles; use 'pad' (LLaVA-1.5's letterboxing) or 'square'"
        )
    return mode


def expand_to_square(image, background: tuple[int, ...]):
    """A PIL image centred on a square canvas of `background` colour (LLaVA's `pad` preprocessing)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def image_pixels(images, image_processor, aspect_ratio: str = "square") -> torch.FloatTensor:
    """PIL images or (H, W, 3) uint8 arrays -> (N, 3, S, S) float pixels, each image later one frame.
    `aspect_ratio="pad"` letterboxes each image onto a square of the processor's mean colour first, so
    that the centre crop keeps all of it."""
    from PIL import Image

    pad = checked_aspect_ratio(aspect_ratio) == "pad"
    prepared = []
    for img in images:
        img = img.convert("RGB") if isinstance(img, Image.Image) else np.asarray(img)
        if pad:
            if not isinstance(img, Image.Image):
                img = Image.fromarray(img.astype(np.uint8)).convert("RGB")
            # The mean colour as LLaVA computes it (truncated), so letterboxes match its preprocessing.
            img = expand_to_square(img, tuple(int(255 * m) for m in image_processor.image_mean))
        prepared.append(img)
    return image_processor(prepared, return_tensors="pt")["pixel_values"].float()


def frame_pixels(frames, image_processor) -> torch.FloatTensor:
    """(T, H, W, 3) uint8 frames (numpy or torch), or a list of PIL frames -> (T, 3, S, S) float pixels."""
    if isinstance(frames, (list, tuple)) and frames and not isinstance(frames[0], (np.ndarray, torch.Tensor)):
        frames = [np.asarray(frame.convert("RGB")) for frame in frames]  # PIL frames
    if isinstance(frames, torch.Tensor):
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    return image_processor(list(frames), return_tensors="pt")["pixel_values"].float()


class LlavaFramesProcessor:
    """Text and pictures -> a llava model's inputs, with the folder's own tokenizer and image processor.

    `images=` one picture or a list (each one frame: pixel_values (N, 3, S, S)); `videos=` one clip (its
    frames as a list or a (T, H, W, 3) array) or a list of clips (pixel_values (N, T, 3, S, S)). Text is
    tokenized as the tokenizer tokenizes it (a string is one row, unbatched without `return_tensors`), with
    its own special tokens; tokenizer keywords (`return_offsets_mapping`, `padding`, ...) pass through. Without `return_tensors` the
    pixels are numpy arrays, as transformers' processors return them.
    """

    def __init__(self, image_processor, tokenizer, image_aspect_ratio: str = "square"):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.image_aspect_ratio = checked_aspect_ratio(image_aspect_ratio)

    @property
    def image_token(self) -> str | None:
        return getattr(self.tokenizer, "image_token", None)

    def __call__(self, text=None, images=None, videos=None, return_tensors=None, **tokenizer_kwargs):
        from transformers import BatchFeature

        if images is not None and videos is not None:
            raise ValueError("pass images= or videos=, not both: a model input holds one kind of picture")
        data = {}
        if text is not None:
            # As a tokenizer answers: a string gives one unbatched row unless tensors are asked for (the
            # pipeline's reading task indexes `processor(word)["input_ids"]` as token ids). Segment ids are
            # all zero (the models have no segments; their forward drops them), returned because callers
            # written for BERT-style processors pop them (the pipeline's DevBench runner).
            tokenizer_kwargs.setdefault("return_token_type_ids", True)
            data.update(self.tokenizer(text, return_tensors=return_tensors, **tokenizer_kwargs))
        if images is not None:
            single = not isinstance(images, (list, tuple))
            data["pixel_values"] = image_pixels(
                [images] if single else images, self.image_processor, self.image_aspect_ratio
            )
        if videos is not None:
            clips = [videos] if _is_one_clip(videos) else list(videos)
            data["pixel_values"] = torch.stack([frame_pixels(clip, self.image_processor) for clip in clips])
        if return_tensors is None and "pixel_values" in data:
            data["pixel_values"] = data["pixel_values"].numpy()
        return BatchFeature(data, tensor_type=return_tensors)

    def decode(self, *args, **kwargs) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        """The processor of a folder written by `save_pretrained`; tokenizer keywords (`padding_side`,
        `revision`, ...) go to AutoTokenizer."""
        from transformers import AutoImageProcessor, AutoTokenizer

        settings = {}
        settings_file = os.path.join(str(path), PROCESSOR_FILE)
        if os.path.isfile(settings_file):
            with open(settings_file) as f:
                settings = json.load(f)
        # trust_remote_code passes on: both Auto classes read the folder's config.json, whose model type
        # only the folder's code defines.
        shared = {k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}
        return cls(
            AutoImageProcessor.from_pretrained(path, **shared),
            AutoTokenizer.from_pretrained(path, **kwargs),
            settings.get("image_aspect_ratio", "square"),
        )

    def save_pretrained(self, folder) -> None:
        """The tokenizer, the image processor and processor_config.json (which names this class for
        AutoProcessor)."""
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        _tokenizer_config_for_both(folder)
        settings = {
            "auto_map": {"AutoProcessor": f"{AUTO_MODULE}.{type(self).__name__}"},
            "image_aspect_ratio": self.image_aspect_ratio,
        }
        with open(os.path.join(str(folder), PROCESSOR_FILE), "w") as f:
            json.dump(settings, f, indent=2)

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Called by AutoProcessor on a class it loaded from a folder's code; saving writes the auto_map
        itself, so there is nothing to record."""


def _tokenizer_config_for_both(folder) -> None:
    """tokenizer_config.json in the forms both transformers 4 (the BabyLM pipeline pins 4.51) and 5 read:
    the image token named in a dictionary (`{"image_token": "<image>"}`: 5 writes a list and a key of its
    own, which 4 does not read as `tokenizer.image_token`), and a fast tokenizer's class under the name
    both know (5 calls a plain tokenizers-backed one `TokenizersBackend`, 4 `PreTrainedTokenizerFast`)."""
    path = os.path.join(str(folder), "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    token = config.pop("image_token", None)
    if token is not None:
        config["extra_special_tokens"] = {"image_token": token}
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(path, "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


def _is_one_clip(videos) -> bool:
    """A clip is a (T, H, W, 3) array or a list of frames (PIL images or (H, W, 3) arrays)."""
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        return videos.ndim == 4
    first = videos[0]
    return not isinstance(first, (list, tuple)) and not (
        isinstance(first, (np.ndarray, torch.Tensor)) and first.ndim == 4
    )
