"""One medium read into the pixels the vision tower sees: a clip as (T, 3, S, S), an image as a one-frame
clip (1, 3, S, S). Training's dataset, the feature cache and the inference commands all read media here,
so that a checkpoint sees at inference exactly the preprocessing it was trained on.

A file that cannot be read raises VideoReadError (a clip, see video.py) or MediaReadError (an image),
whose message is `PATH: reason`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..mm_utils import process_images, process_video_frames
from .video import read_video_frames


class MediaReadError(InputError):
    """An image that cannot be read (missing, empty, not an image); VideoReadError covers clips."""


@dataclass
class _AspectRatio:
    """The `image_aspect_ratio` setting in the shape process_images reads it (a model config's field)."""

    image_aspect_ratio: str | None


def load_image(path: str, image_processor, aspect_ratio: str | None = None) -> torch.Tensor:
    """(1, 3, S, S) pixels of an image file, preprocessed as process_images(..., model.config) does
    (`aspect_ratio` 'pad' letterboxes it first; None or 'square' crops). MediaReadError if unreadable."""
    from PIL import Image

    if not os.path.isfile(path):
        raise MediaReadError(f"{path}: file does not exist")
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # forces the full decode inside the try
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise MediaReadError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    return process_images([image], image_processor, _AspectRatio(aspect_ratio))


def load_clip(path: str, image_processor, num_frames: int) -> torch.Tensor:
    """(num_frames, 3, S, S) pixels of frames spread uniformly over the clip; VideoReadError if unreadable."""
    return process_video_frames(read_video_frames(path, num_frames), image_processor)


def load_pixels(
    modality: str, path: str, num_frames: int, image_processor, aspect_ratio: str | None = None
) -> torch.Tensor:
    """The pixels of one medium of `modality` ('video' or 'image'): load_clip or load_image."""
    if modality == "video":
        return load_clip(path, image_processor, num_frames)
    return load_image(path, image_processor, aspect_ratio)
