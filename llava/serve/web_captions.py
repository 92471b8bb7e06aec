"""What the web page (`python -m llava.serve.web`) shows for one clip or image: the frames a checkpoint
samples, as its vision tower sees them; each checkpoint's caption; each checkpoint's caption of blank
frames (the video-blind control); the sample's reference caption where it comes from --data.

No gradio here: the page (web_page.py) only lays these results out. Every step is the command line's
own (serve.cli's media_input, frames_per_clip and CaptionSet, generation.caption), so a caption on the
page is the caption `python -m llava.serve.cli` prints for the same file and settings.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.media import MediaReadError
from ..data.templates import get_template, trained_version
from ..data.video import VideoReadError
from ..errors import InputError, size_text
from ..generation import caption
from ..mm_utils import process_video_frames
from . import checks
from .cli import CaptionSet, frames_per_clip, media_input

BLIND_LABEL = "video-blind control (blank frames)"


@dataclass
class Checkpoint:
    """A loaded checkpoint with what captioning needs: its template (the one it was trained with), its
    frames per clip, and --data read as its training read it (None without --data)."""

    name: str
    path: str
    tokenizer: Any
    model: Any
    image_processor: Any
    template: Any
    num_frames: int
    samples: CaptionSet | None = None


def checkpoint_names(paths: list[str]) -> list[str]:
    """Short distinct names: each path's last folder (`checkpoint-words-1M`), with as many parent folders
    as it takes to tell two apart (`run-a/checkpoint-words-1M`, `run-b/checkpoint-words-1M`)."""
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(map(len, parts)):
            return names
        depth += 1


def load_checkpoint(
    name: str,
    path: str,
    model_base: str | None = None,
    *,
    device: str | None = None,
    dtype=None,
    num_frames: int | None = None,
    data: str | None = None,
    samples: list[dict] | None = None,
    video_folder: str | None = None,
    image_folder: str | None = None,
) -> Checkpoint:
    """Loads a checkpoint as the command line does (load_pretrained_model, the template it was trained
    with; `device` None: the GPU where there is one). UsageError where `num_frames` is more than it takes."""
    from ..model.builder import load_pretrained_model

    tokenizer, model, image_processor, _ = load_pretrained_model(path, model_base, device=device, dtype=dtype)
    frames = frames_per_clip(model.config, num_frames)
    version = trained_version(model.config)
    read = None
    if data is not None:
        read = CaptionSet(
            model,
            tokenizer,
            image_processor,
            data,
            version,
            video_folder=video_folder,
            image_folder=image_folder,
            num_frames=frames,
            samples=samples,
        )
    return Checkpoint(name, path, tokenizer, model, image_processor, get_template(version), frames, read)


@dataclass(frozen=True)
class Decoding:
    """The page's decoding controls: greedy where `temperature` is 0; `seed` makes sampling repeatable
    (each caption starts from it)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise InputError(
                f"decoding needs temperature >= 0, top-p in (0, 1] and max new tokens >= 1 "
                f"(temperature {self.temperature}, top-p {self.top_p}, max new tokens {self.max_new_tokens})"
            )

    def generation(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p}


@dataclass
class Frame:
    image: np.ndarray  # (S, S, 3) uint8: the tower's input, back in colours
    label: str


@dataclass
class Captions:
    checkpoint: str
    caption: str
    blind: str  # the same checkpoint given blank frames: what it says without seeing the clip


@dataclass
class Description:
    """Everything the page shows for one clip or image."""

    source: str  # `clip.mp4` for an upload, `sample val_00001 (val_00001.mp4)` for a sample of --data
    modality: str
    frames: list[Frame]
    captions: list[Captions]
    reference: str | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        seen = f"{len(self.frames)} frames" if self.modality == "video" else "the image"
        checkpoints = f"{len(self.captions)} checkpoint{'s' if len(self.captions) != 1 else ''}"
        return " ".join([f"{seen} of {self.source}, captioned by {checkpoints}.", *self.notes])


def visible_frames(pixels: torch.Tensor, image_processor) -> list[np.ndarray]:
    """(T, 3, S, S) tower input -> T (S, S, 3) uint8 images: the processor's normalization and rescaling
    undone, so that the page shows what the tower is given (resized, cropped, letterboxed)."""
    x = pixels.detach().float().cpu()
    if getattr(image_processor, "do_normalize", False):
        mean = torch.tensor(image_processor.image_mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(image_processor.image_std, dtype=x.dtype).view(1, 3, 1, 1)
        x = x * std + mean
    if getattr(image_processor, "do_rescale", False):
        x = x / image_processor.rescale_factor
    return list(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


def blank_like(pixels: torch.Tensor, image_processor) -> torch.Tensor:
    """The video-blind control's input: as many frames as `pixels`, each of one flat colour, the
    processor's mean (LLaVA's letterbox colour), preprocessed as clips are: the shape of the clip's
    pixels, nothing of its content."""
    frames, _, height, width = pixels.shape
    flat = np.empty((frames, height, width, 3), dtype=np.uint8)
    flat[...] = [int(255 * m) for m in image_processor.image_mean]
    blank = process_video_frames(flat, image_processor).to(pixels.device, pixels.dtype)
    if blank.shape != pixels.shape:
        raise RuntimeError(f"blank frames came out {tuple(blank.shape)}, the clip's pixels {tuple(pixels.shape)}")
    return blank


def frame_labels(path: str, modality: str, count: int) -> list[str]:
    """`1.25 s` for each sampled frame of a clip: its time in the clip, as the time instruction gives it
    (data.prompts.clip_timing); `frame 3` where the container gives no time; `image` for an image."""
    from ..data.prompts import clip_timing

    if modality != "video":
        return ["image"] * count
    try:
        _, times = clip_timing(path, count)
    except VideoReadError:
        return [f"frame {k}" for k in range(1, count + 1)]
    return [f"{t:.2f} s" for t in times]


def upload_modality(path: str) -> str:
    """'image' for a file Pillow takes for a still image, 'video' for anything else (an animated GIF or
    WebP is a clip; a file that is neither fails in the clip reader, with its reason)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return "video" if getattr(image, "is_animated", False) else "image"
    except Image.UnidentifiedImageError:
        return "video"
    except (OSError, ValueError, Image.DecompressionBombError):
        return "image"  # an image Pillow knows but cannot open: the image reader says why


class Captioner:
    """The loaded checkpoints, serving one description at a time (a lock around the models: the page's
    queue lets one request through at a time, and the lock keeps any other caller from interleaving)."""

    def __init__(self, checkpoints: list[Checkpoint], max_upload_mb: float | None = None):
        if not checkpoints:
            raise ValueError("no checkpoints")
        self.checkpoints = checkpoints
        self.max_upload_mb = max_upload_mb
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checkpoints]

    def sample_choices(self) -> list[tuple[str, int]]:
        """(label, index) of each sample of --data with a clip or an image (text-only samples have nothing
        to see); empty without --data."""
        read = self.checkpoints[0].samples
        if read is None:
            return []
        return [
            (f"{sample['id']} ({os.path.basename(sample['media'])})", index)
            for index, sample in enumerate(read.dataset.samples)
            if sample.get("modality")
        ]

    def upload(self, path: str, decoding: Decoding, name: str | None = None) -> Description:
        """Describes an uploaded file at `path` (`name`: what the user called it, default its file name).
        InputError (one line) where it is too large or cannot be read as a clip or an image."""
        name = name or os.path.basename(path)
        if not os.path.isfile(path):
            raise InputError(f"the upload did not arrive ({name})")
        size = os.path.getsize(path)
        if self.max_upload_mb is not None and size > self.max_upload_mb * 1e6:
            raise InputError(
                f"the upload is {size_text(size)}, more than this server takes "
                f"(--max-upload-mb {self.max_upload_mb:g}) ({name})"
            )
        modality = upload_modality(path)
        inputs = []
        for checkpoint in self.checkpoints:
            try:
                ids, pixels = media_input(
                    checkpoint.model,
                    checkpoint.tokenizer,
                    checkpoint.image_processor,
                    checkpoint.template,
                    path,
                    modality,
                    checkpoint.num_frames,
                )
            except (VideoReadError, MediaReadError) as e:
                # The server's temporary path means nothing to the user: name the file as they did.
                raise checks.media_error(str(e).replace(path, name), name, "the upload") from e
            inputs.append((ids, pixels))
        return self._describe(name, modality, path, inputs, decoding)

    def sample(self, index: int, decoding: Decoding) -> Description:
        """Describes sample `index` of --data, as each checkpoint's training read it; InputError where its
        clip or image cannot be read."""
        if self.checkpoints[0].samples is None:
            raise InputError("no --data was given to pick a sample from")
        read = self.checkpoints[0].samples.dataset
        if not 0 <= index < len(read.samples) or not read.samples[index].get("modality"):
            raise InputError(f"--data has no sample #{index} with a clip or an image to show")
        items = [checkpoint.samples[index] for checkpoint in self.checkpoints]
        for item in items:
            if item.get("skipped"):
                raise checks.media_error(item["reason"], item["path"], f"sample {item['id']}")
        sample = read.samples[index]
        path = read.media_path(sample)
        return self._describe(
            f"sample {sample['id']} ({os.path.basename(path)})",
            sample["modality"],
            path,
            [(item["prompt_ids"], item["pixels"]) for item in items],
            decoding,
            reference=items[0]["reference"],
        )

    def _describe(self, source, modality, path, inputs, decoding: Decoding, reference=None) -> Description:
        first = self.checkpoints[0]
        first_pixels = inputs[0][1]
        images = visible_frames(first_pixels, first.image_processor)
        frames = [Frame(image, label) for image, label in zip(images, frame_labels(path, modality, len(images)))]
        notes = []
        if len(self.checkpoints) > 1:
            differ = [
                c.name
                for c, (_, pixels) in zip(self.checkpoints[1:], inputs[1:])
                if pixels.shape != first_pixels.shape or not torch.equal(pixels, first_pixels)
            ]
            if differ:
                notes.append(
                    f"{', '.join(differ)} read{'s' if len(differ) == 1 else ''} it at other frames or with other "
                    f"preprocessing; the strip shows what {first.name} sees."
                )
        captions = []
        with self._lock:
            for checkpoint, (ids, pixels) in zip(self.checkpoints, inputs):
                said = self._caption(checkpoint, ids, pixels, decoding)
                blind = self._caption(checkpoint, ids, blank_like(pixels, checkpoint.image_processor), decoding)
                captions.append(Captions(checkpoint.name, said, blind))
        return Description(source, modality, frames, captions, reference, notes)

    @staticmethod
    def _caption(checkpoint: Checkpoint, ids, pixels, decoding: Decoding) -> str:
        torch.manual_seed(decoding.seed)  # each caption from the same seed: repeatable, and in any order
        return caption(
            checkpoint.model, checkpoint.tokenizer, checkpoint.template, [ids], [pixels], **decoding.generation()
        )[0]
