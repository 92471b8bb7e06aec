"""How a sample's turns are written before they are tokenized: LLaVA's prompt settings (recorded in the
model config, so that inference writes prompts the way a run trained on them) and LLaVA-NeXT's prompt
options: `--mm_use_im_start_end` writes the visual block `<im_start><image><im_end>` in the human turn;
`--add_time_instruction` writes the clip's duration and its sampled frames' times after it, as LLaVA-NeXT
and lmms-eval's llava_vid do. Training, captioning and evaluation all write prompts through here."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

from ..mm_utils import PLACEHOLDER_PATTERN, count_placeholders
from .templates import with_start_end_tokens
from .video import VideoReadError, sample_indices

logger = logging.getLogger(__name__)


@dataclass
class PromptSettings:
    """LLaVA's prompt settings: how a sample's turns are written before they are tokenized. Each is one of
    the training's flags and is recorded in the model config under its own name, so that inference writes
    prompts the way the run trained on them (`from_config`)."""

    image_aspect_ratio: str | None = field(
        default=None,
        metadata={
            "help": "square (resize and centre-crop) or pad (letterbox onto the processor's mean colour first, as LLaVA-1.5); default: the checkpoint's setting, else square. Recorded in the model config."
        },
    )
    add_time_instruction: bool = field(
        default=False,
        metadata={
            "help": "Write the clip's duration and its sampled frames' times into the human turn (LLaVA-NeXT's video prompt); recorded in the config."
        },
    )
    mm_use_im_start_end: bool = field(
        default=False,
        metadata={
            "help": "Wrap the visual block in <im_start>/<im_end> tokens (added to the tokenizer); recorded in the config."
        },
    )
    mm_use_im_patch_token: bool = field(
        default=False,
        metadata={
            "help": "Add LLaVA's <im_patch> token to the tokenizer (LLaVA never writes it in prompts); recorded in the config."
        },
    )

    @classmethod
    def from_config(cls, config) -> PromptSettings:
        """The settings a checkpoint's config records (unset ones at their defaults)."""
        recorded = {f.name: getattr(config, f.name, None) for f in fields(cls)}
        return cls(**{name: value for name, value in recorded.items() if value is not None})

    def over(self, config) -> PromptSettings:
        """These settings laid over a checkpoint's own: an aspect ratio not given is the checkpoint's (else
        square), and a switch the checkpoint trained with stays on."""
        recorded = PromptSettings.from_config(config)
        for f in fields(self):
            if f.type == "bool" and getattr(recorded, f.name) and not getattr(self, f.name):
                logger.info("%s stays on: the checkpoint was trained with it", f.name)
        return PromptSettings(
            image_aspect_ratio=self.image_aspect_ratio or recorded.image_aspect_ratio or "square",
            add_time_instruction=self.add_time_instruction or recorded.add_time_instruction,
            mm_use_im_start_end=self.mm_use_im_start_end or recorded.mm_use_im_start_end,
            mm_use_im_patch_token=self.mm_use_im_patch_token or recorded.mm_use_im_patch_token,
        )

    def write(self, config) -> None:
        for f in fields(self):
            setattr(config, f.name, getattr(self, f.name))


def clip_timing(path: str, num_frames: int) -> tuple[float, list[float]]:
    """`(duration in seconds, times of the sampled frames)` of a clip read at `num_frames` frames, from
    the container's frame count and rate (the frames read_video_frames picks: segment centres)."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            total = stream.frames
            if total <= 0 and rate > 0:  # containers that do not declare a count (mkv, webm)
                seconds = float(stream.duration * stream.time_base) if stream.duration else container.duration / 1e6
                total = max(1, round(seconds * rate))
    except (av.FFmpegError, OSError, IndexError) as e:
        raise VideoReadError(f"{path}: cannot read the clip's frame rate ({type(e).__name__}: {e})") from e
    if rate <= 0 or total <= 0:
        raise VideoReadError(f"{path}: the container gives no frame rate or frame count")
    return total / rate, [index / rate for index in sample_indices(total, num_frames)]


def time_instruction(duration: float, times: list[float]) -> str:
    """LLaVA-NeXT's sentence about a clip's timing (the text lmms-eval's llava_vid writes too)."""
    stamps = ",".join(f"{t:.2f}s" for t in times)
    return (
        f"The video lasts for {duration:.2f} seconds, and {len(times)} frames are uniformly sampled from it. "
        f"These frames are located at {stamps}.Please answer the following questions related to this video."
    )


def _first_visual_turn(turns: list[dict]) -> int | None:
    return next((i for i, t in enumerate(turns) if t["from"] == "user" and count_placeholders(t["value"])), None)


def with_time_instruction(turns: list[dict], instruction: str) -> list[dict]:
    """The visual block first, then the instruction, then the rest of the turn (LLaVA-NeXT's layout)."""
    i = _first_visual_turn(turns)
    if i is None:
        return turns
    value = turns[i]["value"]
    token = PLACEHOLDER_PATTERN.search(value).group(0)
    rest = PLACEHOLDER_PATTERN.sub("", value, count=1).strip()
    turns = list(turns)
    turns[i] = {**turns[i], "value": f"{token}\n{instruction}\n{rest}"}
    return turns


def with_prompt_options(turns: list[dict], modality, path, prompt: PromptSettings, num_frames: int) -> list[dict]:
    """`turns` with LLaVA-NeXT's prompt options applied to the human turns, as training writes them:
    `--add_time_instruction` (the duration and frame times of the clip at `path`, read at `num_frames`)
    and `--mm_use_im_start_end`. VideoReadError where the clip cannot be read."""
    if prompt.add_time_instruction and modality == "video":
        duration, times = clip_timing(path, num_frames)
        turns = with_time_instruction(turns, time_instruction(duration, times))
    return with_start_end_tokens(turns) if prompt.mm_use_im_start_end else turns
