"""Training data: LLaVA JSON/JSONL samples -> tokenized, labelled, padded batches with clips and images.

A sample is `{"id", "video" | "image" (optional), "conversations": [...]}` (read and validated by
llava/samples.py), the media path relative to `--video_folder` / `--image_folder`. Text-only, image and video samples mix in one file and one batch; a
text-only sample stays text-only (no placeholder, no pixels). Images are one-frame clips, letterboxed
first with `--image_aspect_ratio pad`.

`--data_path` is a JSON list or JSONL file, several of them joined by commas, LLaVA-NeXT's brace form
`/data/{a,b,c}.json`, or a LLaVA-NeXT YAML mixture (see llava/data_files.py).

LLaVA-NeXT's prompt options: `--mm_use_im_start_end` writes the visual block `<im_start><image><im_end>`
in the human turn; `--add_time_instruction` writes the clip's duration and its sampled frames' times
after it, as LLaVA-NeXT and lmms-eval's llava_vid do.

Unreadable media are skipped, never replaced: `__getitem__` returns a skip record (with the sample's
index), the collator drops it and passes it on, and the trainer hands it to `SkipTracker`, which counts
each sample once over all ranks, logs it once, lists it in `skipped_samples.jsonl` and stops the run
on every rank past `--max_skip_fraction`.

Padding (see `ensure_pad_token`): a tokenizer without a pad token reuses EOS as pad. Nothing here
derives anything from the pad id: the collator builds `attention_mask` from lengths and pads labels
with IGNORE_INDEX, so a real EOS inside a sample stays attended and labelled.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from ..constants import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
)
from ..conversation import Template, get_template, with_start_end_tokens
from ..errors import UsageError, UserError
from ..media import MediaReadError, load_pixels
from ..mm_utils import PLACEHOLDER_PATTERN, count_placeholders, image_aspect_ratio
from ..modeling.frame_sampling import sample_indices
from ..modeling.vision_settings import VisionSettings
from ..samples import MODALITIES, load_samples
from ..video import VideoReadError
from .ranks import is_distributed

logger = logging.getLogger(__name__)

SKIPPED_FILE = "skipped_samples.jsonl"


@dataclass
class DataArguments:
    data_path: str | None = field(
        default=None,
        metadata={
            "help": "LLaVA JSON list or JSONL file of samples; several files joined by commas, /dir/{a,b}.json, or a LLaVA-NeXT YAML mixture."
        },
    )
    video_folder: str | None = field(
        default=None, metadata={"help": "Folder that the samples' 'video' paths are relative to."}
    )
    image_folder: str | None = field(
        default=None, metadata={"help": "Folder that the samples' 'image' paths are relative to."}
    )
    num_frames: int = field(
        default=VisionSettings.num_frames,
        metadata={"help": "Frames sampled uniformly from each clip (LLaVA-NeXT: --frames_upbound)."},
    )
    image_aspect_ratio: str | None = field(
        default=None,
        metadata={
            "help": "square (resize and centre-crop) or pad (letterbox onto the processor's mean colour first, as LLaVA-1.5); default: the checkpoint's setting, else square. Recorded in the model config."
        },
    )
    add_time_instruction: bool = field(
        default=False,
        metadata={
            "help": "Write the clip's duration and its sampled frames' times into the human turn (LLaVA-NeXT's video prompt)."
        },
    )
    feature_cache: str | None = field(
        default=None,
        metadata={
            "help": "Folder written by `python -m llava.train.cache_features`: cached clips skip decoding and the tower; the rest are computed online."
        },
    )
    max_skip_fraction: float = field(
        default=0.05,
        metadata={
            "help": "Abort when more than this share of the samples is skipped as unreadable (0.05: one sample in twenty)."
        },
    )


# ------------------------------------------------------------------------------------------ dataset
def media_path(sample: dict, data_args: DataArguments) -> str:
    """Where a loaded sample's medium lies: its path under --video_folder / --image_folder."""
    folder = data_args.video_folder if sample["modality"] == "video" else data_args.image_folder
    return os.path.join(folder, sample["media"]) if folder else sample["media"]


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


def with_prompt_options(turns: list[dict], modality, path, data_args: DataArguments, im_start_end: bool) -> list[dict]:
    """`turns` with LLaVA-NeXT's prompt options applied to the human turns, as training writes them:
    `--add_time_instruction` (the clip's duration and its frames' times, read from the clip at `path`)
    and `--mm_use_im_start_end` (`im_start_end`). VideoReadError where the clip cannot be read."""
    if data_args.add_time_instruction and modality == "video":
        duration, times = clip_timing(path, data_args.num_frames)
        turns = with_time_instruction(turns, time_instruction(duration, times))
    return with_start_end_tokens(turns) if im_start_end else turns


class LazySupervisedDataset(Dataset):
    """Samples are validated when loaded and tokenized, decoded and preprocessed on access.

    `visual_tokens_per_input(num_frames)` gives the visual block's length in the LM (the packer's token
    count); text is cut from the end so that visual + text <= `model_max_length`, never the visual block.
    `im_start_end` wraps each visual block in `<im_start>`/`<im_end>` (the tokenizer must know them).
    """

    def __init__(
        self,
        data_path: str,
        tokenizer,
        data_args: DataArguments,
        image_processor=None,
        template: str | Template = "plain",
        model_max_length: int | None = None,
        visual_tokens_per_input: Callable[[int], int] | None = None,
        feature_cache=None,
        im_start_end: bool = False,
        seed: int = 0,
        samples: list[dict] | None = None,
        with_prompts: bool = False,
    ):
        self.tokenizer = tokenizer
        self.data_args = data_args
        self.image_processor = image_processor
        self.template = get_template(template)
        self.model_max_length = model_max_length
        self.visual_tokens_per_input = visual_tokens_per_input
        self.im_start_end = im_start_end
        self.with_prompts = with_prompts  # items carry `prompt_ids` (the turns before the answer): inference
        self.aspect_ratio = image_aspect_ratio(data_args)  # "square" where unset
        # `samples`: the ones load_samples(data_path, seed) gives, where the caller has them already
        self.samples = samples if samples is not None else load_samples(data_path, seed)
        self.num_truncated = 0  # per process: DataLoader workers each count their own

        present = {s["modality"] for s in self.samples} - {None}
        if present and image_processor is None:
            raise UsageError(
                f"the data holds {' and '.join(sorted(present))} samples but the model has no vision tower: give --vision_tower ({data_path})"
            )
        for modality in sorted(present):
            visual = self.visual_tokens(modality)
            if model_max_length is not None and visual >= model_max_length:
                raise UsageError(
                    f"a {modality} takes {visual} visual tokens, which leaves no room for text in "
                    f"--model_max_length {model_max_length}; use fewer frames, smaller packer grids or a longer context"
                )
        self.feature_cache = feature_cache
        self.cache_keys = self._find_cached() if feature_cache is not None else {}
        counts = {m: sum(s["modality"] == m for s in self.samples) for m in (*MODALITIES, None)}
        logger.info(
            "loaded %d samples from %s: %d video, %d image, %d text-only",
            len(self.samples),
            data_path,
            counts["video"],
            counts["image"],
            counts[None],
        )

    def __len__(self) -> int:
        return len(self.samples)

    def visual_tokens(self, modality: str | None) -> int:
        """Positions one medium of `modality` takes in the language model (0 for a text-only sample)."""
        if modality is None or self.visual_tokens_per_input is None:
            return 0
        return int(self.visual_tokens_per_input(self.data_args.num_frames if modality == "video" else 1))

    def _find_cached(self) -> dict[int, str]:
        """Sample index -> cache entry, for the samples whose medium is in the feature cache."""
        cache = self.feature_cache
        with_media = [i for i, s in enumerate(self.samples) if s["modality"]]
        if self.aspect_ratio != "square" and any(self.samples[i]["modality"] == "image" for i in with_media):
            # The cache holds images as the tower sees them without letterboxing.
            logger.warning(
                "--image_aspect_ratio %s: images are encoded online, not read from the feature cache", self.aspect_ratio
            )
            with_media = [i for i in with_media if self.samples[i]["modality"] != "image"]
        keys = {}
        for i in with_media:
            sample = self.samples[i]
            key = cache.key_for(sample["modality"], self.media_path(sample), self.data_args.num_frames)
            if key is not None and key in cache:
                keys[i] = key
        logger.info(
            "feature cache %s: %d of %d samples with media are cached; the other %d are decoded and encoded online",
            cache.folder,
            len(keys),
            len(with_media),
            len(with_media) - len(keys),
        )
        if with_media and not keys:
            others = cache.other_namespaces()
            logger.warning(
                "nothing of this data set is in the feature cache for this tower and these settings (namespace "
                "%s)%s; run `python -m llava.train.cache_features` with this run's data and tower flags",
                cache.namespace,
                f"; the folder holds other namespaces {others} (another tower, layer or processor?)" if others else "",
            )
        return keys

    def media_path(self, sample: dict) -> str:
        return media_path(sample, self.data_args)

    def sample_lengths(self) -> tuple[list[int], list[bool]]:
        """`(lengths, has_media)` per sample, without reading any medium: words of the conversation plus
        the visual tokens of its medium (what LLaVA's --group_by_modality_length sorts by)."""
        lengths = [
            sum(len(t["value"].split()) for t in s["conversations"]) + self.visual_tokens(s["modality"])
            for s in self.samples
        ]
        return lengths, [s["modality"] is not None for s in self.samples]

    def prompt_turns(self, sample: dict) -> list[dict]:
        """The conversation with LLaVA-NeXT's prompt options applied to its human turns."""
        path = self.media_path(sample) if sample["modality"] else None
        return with_prompt_options(sample["conversations"], sample["modality"], path, self.data_args, self.im_start_end)

    def _fit(self, ids: list[int], labels: list[int], modality) -> tuple[list[int], list[int], int]:
        """Drops text tokens from the end until visual + text fits; returns how many were dropped."""
        if self.model_max_length is None:
            return ids, labels, 0
        placeholders = sum(i == IMAGE_TOKEN_INDEX for i in ids)
        length = len(ids) - placeholders + placeholders * self.visual_tokens(modality)
        excess = length - self.model_max_length
        if excess <= 0:
            return ids, labels, 0
        keep = [True] * len(ids)
        to_drop = excess
        for position in range(len(ids) - 1, -1, -1):  # from the end, stepping over placeholders
            if to_drop == 0:
                break
            if ids[position] != IMAGE_TOKEN_INDEX:
                keep[position] = False
                to_drop -= 1
        ids = [i for i, k in zip(ids, keep) if k]
        labels = [label for label, k in zip(labels, keep) if k]
        return ids, labels, excess

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        pixel_values = patch_features = None
        if index in self.cache_keys:
            patch_features = self.feature_cache.load(self.cache_keys[index])  # None where the entry is damaged
        if patch_features is None and sample["modality"]:
            path = self.media_path(sample)
            try:
                pixel_values = load_pixels(
                    sample["modality"], path, self.data_args.num_frames, self.image_processor, self.aspect_ratio
                )
            except (VideoReadError, MediaReadError) as e:
                return {"index": index, "id": sample["id"], "skipped": True, "reason": str(e), "path": path}
        try:
            turns = self.prompt_turns(sample)
        except VideoReadError as e:
            path = self.media_path(sample)
            return {"index": index, "id": sample["id"], "skipped": True, "reason": str(e), "path": path}

        ids, labels = self.template.tokenize(turns, self.tokenizer)
        ids, labels, cut = self._fit(ids, labels, sample["modality"])
        if cut:
            self.num_truncated += 1
            n = self.num_truncated
            if n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th ...: visible without flooding the log
                logger.warning(
                    "sample %r: %d text tokens cut to fit model_max_length=%d (%d truncated samples so far in this process)",
                    sample["id"],
                    cut,
                    self.model_max_length,
                    n,
                )
        item = {
            "id": sample["id"],
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "patch_features": patch_features,
            "modality": sample["modality"],
            "truncated": cut,
        }
        if self.with_prompts:
            item["prompt_ids"] = self.template.prompt_ids(turns, self.tokenizer)
        return item


def dataset_for_model(model, tokenizer, image_processor, data_path: str, version: str, **data_settings):
    """A data file read for a trained model as its training read it: the image preprocessing and prompt
    options its config records (`image_aspect_ratio`, `mm_use_im_start_end`, `add_time_instruction`),
    its frame count and its positions; items carry `prompt_ids`, the prompt a caption is generated from.
    `data_settings`: DataArguments' (video_folder, image_folder, num_frames; None keeps the model's), and
    `samples` where the caller has read them already."""
    from ..modeling.llava_arch import max_positions

    config = model.config
    samples = data_settings.pop("samples", None)
    settings = {key: value for key, value in data_settings.items() if value is not None}
    args = DataArguments(
        data_path=data_path,
        num_frames=settings.pop("num_frames", None) or VisionSettings.from_config(config).num_frames,
        image_aspect_ratio=getattr(config, "image_aspect_ratio", None),
        add_time_instruction=bool(getattr(config, "add_time_instruction", False)),
        **settings,
    )
    tower = model.get_vision_tower()
    return LazySupervisedDataset(
        data_path,
        tokenizer,
        args,
        image_processor=image_processor,
        template=version,
        model_max_length=max_positions(config),  # training's default --model_max_length
        visual_tokens_per_input=model.get_model().num_visual_tokens if tower is not None else None,
        im_start_end=bool(getattr(config, "mm_use_im_start_end", False)) and tower is not None,
        samples=samples,
        with_prompts=True,
    )


# ----------------------------------------------------------------------------------------- collator
@dataclass
class DataCollatorForSupervisedDataset:
    """Right-pads a list of dataset items into a batch; skipped items are dropped and reported.

    `images` holds the visual inputs of the samples that have media, in sample order: pixel tensors, or
    `{"patch_features": grid}` for media read from the feature cache; `modalities` the matching
    'video'/'image' per entry (the model consumes both in placeholder order).
    """

    tokenizer: object

    def _pad_id(self) -> int:
        # The value is irrelevant to the model (masked, unlabelled); it only has to be a valid id.
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return candidate
        return 0

    def __call__(self, instances: list[dict]) -> dict:
        skipped = [
            {"index": i.get("index"), "id": i["id"], "reason": i["reason"], "path": i["path"]}
            for i in instances
            if i.get("skipped")
        ]
        kept = [i for i in instances if not i.get("skipped")]
        if not kept:
            empty = torch.zeros(0, 0, dtype=torch.long)
            return {
                "input_ids": empty,
                "attention_mask": empty.clone(),
                "labels": empty.clone(),
                "images": [],
                "modalities": [],
                "skipped": skipped,
            }
        lengths = [len(i["input_ids"]) for i in kept]
        width = max(lengths)
        input_ids = torch.full((len(kept), width), self._pad_id(), dtype=torch.long)
        labels = torch.full((len(kept), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(len(kept), width, dtype=torch.long)
        for row, (item, n) in enumerate(zip(kept, lengths)):
            input_ids[row, :n] = item["input_ids"]
            labels[row, :n] = item["labels"]
            attention_mask[row, :n] = 1
        with_media = [i for i in kept if i.get("pixel_values") is not None or i.get("patch_features") is not None]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "images": [
                {"patch_features": i["patch_features"]} if i.get("patch_features") is not None else i["pixel_values"]
                for i in with_media
            ],
            "modalities": [i["modality"] for i in with_media],
            "skipped": skipped,
        }


# ------------------------------------------------------------------------------------------- skips
class SkipLimitExceeded(UserError, RuntimeError):
    """More samples could not be read than --max_skip_fraction allows; raised on every rank at once."""


class SkipTracker:
    """Counts unreadable samples over all ranks, once per sample, lists each once, and stops the run past
    `max_fraction` of the data set.

    A sample is its index in the data set: two samples that share a clip (or an id) are two skips, and a
    sample met again (a later epoch, or the samples that pad a distributed epoch) is counted once. A rank
    `note`s what its batches skip; at the end of each optimizer step `sync` gathers what every rank noted
    (one small all-reduce, then a gather only if something was skipped), rank 0 appends the new samples
    to `output_dir/skipped_samples.jsonl` and logs them, and every rank takes the same count and the same
    decision to stop. Samples already listed there (a resumed run) count as seen: a restart neither lists
    nor counts a sample twice.
    """

    def __init__(self, output_dir: str, dataset_size: int, max_fraction: float, rank: int = 0):
        self.path = os.path.join(output_dir, SKIPPED_FILE)
        self.dataset_size = dataset_size
        self.max_fraction = max_fraction
        self.rank = rank
        self._seen: set[int] = set(_listed_indices(self.path))
        self._noted: dict[int, dict] = {}
        if self._seen:
            logger.info("%d skipped samples already listed in %s", len(self._seen), self.path)

    @property
    def count(self) -> int:
        return len(self._seen)

    def note(self, skipped: list[dict]) -> None:
        """Skip records of this rank's batch (from the collator), counted at the next `sync`."""
        for item in skipped:
            if item["index"] not in self._seen:
                self._noted.setdefault(item["index"], {**item, "rank": self.rank})

    def sync(self, device=None) -> None:
        """Counts what every rank noted since the last call. A collective where several ranks run: every
        rank calls it at the same point. Raises SkipLimitExceeded on every rank past the limit."""
        new = {}
        for item in _gather_from_ranks(list(self._noted.values()), device):
            if item["index"] not in self._seen:
                new.setdefault(item["index"], item)
        self._noted.clear()
        if not new:
            return
        if self.rank == 0:
            self._list(sorted(new.values(), key=lambda item: item["index"]))
        self._seen |= new.keys()
        share = self.count / max(self.dataset_size, 1)
        if share > self.max_fraction:
            raise SkipLimitExceeded(
                f"{self.count} of {self.dataset_size} samples ({share:.1%}) could not be read, more than the "
                f"allowed {self.max_fraction:.1%}; fix or remove them, or raise the limit (e.g. "
                f"--max_skip_fraction {min(1.0, 2 * share):.2f}) ({self.path})"
            )

    def _list(self, items: list[dict]) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        cut_short = _ends_mid_line(self.path)
        with open(self.path, "a", encoding="utf-8") as f:
            if cut_short:  # a crash cut the last line short: start a new one
                f.write("\n")
            for item in items:
                logger.warning(
                    "skipping sample %r (#%d, %s): %s", item["id"], item["index"], item["path"], item["reason"]
                )
                entry = {key: item[key] for key in ("index", "id", "path", "reason", "rank")}
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _listed_indices(path: str) -> list[int]:
    """Indices listed in a skipped_samples.jsonl; a line cut short by a crash is left out (its sample is
    listed again when met again)."""
    if not os.path.isfile(path):
        return []
    indices = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                indices.append(int(json.loads(line)["index"]))
            except (ValueError, KeyError, TypeError):
                continue
    return indices


def _ends_mid_line(path: str) -> bool:
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _gather_from_ranks(items: list[dict], device) -> list[dict]:
    """Every rank's `items`, on every rank; with one process, `items`."""
    if not is_distributed():
        return items
    total = torch.tensor([len(items)], dtype=torch.long, device=device)
    dist.all_reduce(total)
    if int(total.item()) == 0:  # the usual case: nothing skipped anywhere, nothing more to send
        return []
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for rank_items in gathered for item in rank_items]


# -------------------------------------------------------------------------------------------- pad
def ensure_pad_token(tokenizer, model=None) -> int:
    """Gives a tokenizer without a pad token one, without masking EOS; returns the pad id.

    Choice: EOS doubles as pad. The vocabulary, the embeddings and a tied head stay untouched, so a
    checkpoint keeps its original shapes, and EOS is still learned because nothing derives masks or
    labels from the pad id (the collator uses lengths). Only a tokenizer with neither pad nor EOS gets a
    new `<pad>` token, and then `model`'s embeddings are resized (tied heads stay tied).
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
            logger.info("the tokenizer has no pad token: EOS %r pads (masks come from lengths)", tokenizer.eos_token)
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            logger.info("the tokenizer has neither pad nor EOS: added <pad> (id %d)", tokenizer.pad_token_id)
            if model is not None and model.get_input_embeddings().num_embeddings < len(tokenizer):
                model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer.pad_token_id
