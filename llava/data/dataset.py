"""Samples as model inputs: LLaVA JSON/JSONL samples -> tokenized, labelled, padded batches with clips and
images, for training and for every command that reads a data set as training read it.

A sample is `{"id", "video" | "image" (optional), "conversations": [...]}` (read and validated by
samples.py), the media path relative to `--video_folder` / `--image_folder`. Text-only, image and video
samples mix in one file and one batch; a text-only sample stays text-only (no placeholder, no pixels).
Images are one-frame clips, letterboxed first with `--image_aspect_ratio pad`. `--data_path` is a JSON
list or JSONL file, several of them joined by commas, LLaVA-NeXT's brace form `/data/{a,b,c}.json`, or a
LLaVA-NeXT YAML mixture (see files.py). Turns are written with the prompt options of prompts.py.

Unreadable media are skipped, never replaced: `__getitem__` returns a skip record (with the sample's
index), the collator drops it and passes it on; training counts it over all ranks
(llava/train/skipped_samples.py).

A sample with coordinates (LLaVA-ST's `variables`, grounded_samples.py) also gives `coordinate_values`:
a float tensor shaped like `input_ids`, each placeholder's value and NaN elsewhere, padded with NaN.

Padding (see `ensure_pad_token`): a tokenizer without a pad token reuses EOS as pad. Nothing here
derives anything from the pad id: the collator builds `attention_mask` from lengths and pads labels
with IGNORE_INDEX, so a real EOS inside a sample stays attended and labelled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, get_worker_info

from ..constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from ..errors import UsageError
from ..mm_utils import image_aspect_ratio
from ..modeling.vision_settings import VisionSettings
from .grounded_samples import coordinate_values, placeholder_token_ids, require_coordinate_tokens
from .media import MediaReadError, load_pixels
from .prompts import PromptSettings, with_prompt_options
from .samples import MODALITIES, load_samples
from .templates import Template, get_template
from .video import VideoReadError
from .worker_handoff import for_training_process

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaFolders:
    """The folders samples' media paths are relative to (--video_folder, --image_folder)."""

    video_folder: str | None = None
    image_folder: str | None = None


def media_path(sample: dict, folders) -> str:
    """Where a loaded sample's medium lies: its path under `folders.video_folder` / `folders.image_folder`
    (--video_folder / --image_folder)."""
    folder = folders.video_folder if sample["modality"] == "video" else folders.image_folder
    return os.path.join(folder, sample["media"]) if folder else sample["media"]


class LazySupervisedDataset(Dataset):
    """Samples are validated when loaded and tokenized, decoded and preprocessed on access.

    Clips are read at `num_frames` frames, media paths are relative to `folders` (an object with
    `video_folder` and `image_folder`), and turns are written with `prompt`'s options (PromptSettings;
    `<im_start>`/`<im_end>` around each visual block need the tokenizer to know them).
    `visual_tokens_per_input(num_frames)` gives the visual block's length in the LM (the packer's token
    count); text is cut from the end so that visual + text <= `model_max_length`, never the visual block.
    """

    def __init__(
        self,
        data_path: str,
        tokenizer,
        *,
        num_frames: int,
        folders=None,
        prompt: PromptSettings | None = None,
        image_processor=None,
        template: str | Template = "plain",
        model_max_length: int | None = None,
        visual_tokens_per_input: Callable[[int], int] | None = None,
        feature_cache=None,
        seed: int = 0,
        samples: list[dict] | None = None,
        with_prompts: bool = False,
    ):
        self.tokenizer = tokenizer
        self.num_frames = num_frames
        self.folders = folders if folders is not None else MediaFolders()
        self.prompt = prompt if prompt is not None else PromptSettings()
        self.image_processor = image_processor
        self.template = get_template(template)
        self.model_max_length = model_max_length
        self.visual_tokens_per_input = visual_tokens_per_input
        self.with_prompts = with_prompts  # items carry `prompt_ids` (the turns before the answer): inference
        self.aspect_ratio = image_aspect_ratio(self.prompt)  # "square" where unset
        # A sample with coordinates reads its values at its placeholders, which must be single tokens; boxes
        # and spans written as numbers are coordinates only for a tokenizer that has them.
        self.coordinate_ids = placeholder_token_ids(tokenizer) or {}
        # `samples`: the ones load_samples(data_path, seed) gives, where the caller has them already
        self.samples = samples if samples is not None else load_samples(data_path, seed, bool(self.coordinate_ids))
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
        require_coordinate_tokens(self.samples, bool(self.coordinate_ids), data_path)
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
        return int(self.visual_tokens_per_input(self.num_frames if modality == "video" else 1))

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
            key = cache.key_for(sample["modality"], self.media_path(sample), self.num_frames)
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
        return media_path(sample, self.folders)

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
        return with_prompt_options(sample["conversations"], sample["modality"], path, self.prompt, self.num_frames)

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
            # None where the entry is damaged. In a DataLoader worker, the entry crosses to the training
            # process by reference (feature_cache.GridFromShard) and is a tensor again there.
            patch_features = self.feature_cache.load(
                self.cache_keys[index], for_another_process=get_worker_info() is not None
            )
        if patch_features is None and sample["modality"]:
            path = self.media_path(sample)
            try:
                pixel_values = load_pixels(
                    sample["modality"], path, self.num_frames, self.image_processor, self.aspect_ratio
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
        if "variables" in sample:
            # On the final ids: a placeholder cut by _fit takes its value with it. The prompt's values are
            # the first len(prompt_ids) of these (prompt_ids is a prefix of input_ids).
            values = coordinate_values(
                ids, turns, sample["variables"], self.coordinate_ids, self.template.keeps_text_of
            )
            item["coordinate_values"] = torch.tensor(values, dtype=torch.float32)
        if self.with_prompts:
            item["prompt_ids"] = self.template.prompt_ids(turns, self.tokenizer)
        return item


def dataset_for_model(model, tokenizer, image_processor, data_path: str, version: str, **data_settings):
    """A data file read for a trained model as its training read it: the image preprocessing and prompt
    options its config records (PromptSettings), its frame count and its positions; items carry
    `prompt_ids`, the prompt a caption is generated from. `data_settings`: `video_folder`, `image_folder`,
    `num_frames` (None keeps the model's), and `samples` where the caller has read them already."""
    from ..modeling.llava_arch import max_positions

    config = model.config
    tower = model.get_vision_tower()
    prompt = PromptSettings.from_config(config)
    if tower is None:
        prompt = dataclasses.replace(prompt, mm_use_im_start_end=False)
    return LazySupervisedDataset(
        data_path,
        tokenizer,
        num_frames=data_settings.get("num_frames") or VisionSettings.from_config(config).num_frames,
        folders=MediaFolders(data_settings.get("video_folder"), data_settings.get("image_folder")),
        prompt=prompt,
        image_processor=image_processor,
        template=version,
        model_max_length=max_positions(config),  # training's default --model_max_length
        visual_tokens_per_input=model.get_model().num_visual_tokens if tower is not None else None,
        samples=data_settings.get("samples"),
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
        batch = self._collate([i for i in instances if not i.get("skipped")])
        batch["skipped"] = skipped
        # In a DataLoader worker: small tensors cross to the training process as bytes (worker_handoff.py).
        return for_training_process(batch) if get_worker_info() is not None else batch

    def _collate(self, kept: list[dict]) -> dict:
        if not kept:
            empty = torch.zeros(0, 0, dtype=torch.long)
            return {
                "input_ids": empty,
                "attention_mask": empty.clone(),
                "labels": empty.clone(),
                "images": [],
                "modalities": [],
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
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "images": [
                {"patch_features": i["patch_features"]} if i.get("patch_features") is not None else i["pixel_values"]
                for i in with_media
            ],
            "modalities": [i["modality"] for i in with_media],
        }
        if any("coordinate_values" in i for i in kept):  # batches without coordinates stay as they were
            batch["coordinate_values"] = _padded_values(kept, width)
        return batch


def _padded_values(kept: list[dict], width: int) -> torch.Tensor:
    """Each item's `coordinate_values`, right-padded with NaN (no placeholder there); all NaN for an item
    without coordinates."""
    values = torch.full((len(kept), width), float("nan"), dtype=torch.float32)
    for row, item in enumerate(kept):
        if "coordinate_values" in item:
            values[row, : len(item["coordinate_values"])] = item["coordinate_values"]
    return values


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
