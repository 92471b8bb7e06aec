"""The 2025 BabyLM pipeline's zero-shot data, read as its `sentence_zero_shot/read_files.py` reads it.

Each JSONL line of the `--data_path` folder becomes an item: `sentences` (the candidates, the right one
first: `label` is 0 for every task), their `prefixes` and `completions` (the part of each sentence that is
scored), and metadata, every other key, by which accuracies are grouped (`UID` always; BLiMP adds `field`
and `linguistics_term`, EWoK its context and target contrasts; the wug tasks carry the human `ratio`).
Files are read in the folder's own listing order (the pipeline's `Path.iterdir()`), lines in file order:
the order that numbers the saved predictions.

The image tasks' records name their picture by its row in a `datasets` dataset (`--images_path`,
`--image_split`): VQA's `idx_in_hf_dataset` (column `image`), Winoground's `image_idx` and `image_key`
(`image_0` or `image_1`). Without `--images_path` they are scored on their text alone, as the pipeline
scores them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from ...errors import InputError

TEXT_TASKS = ("blimp", "ewok", "entity_tracking", "wug_adj", "wug_past", "comps")
IMAGE_TASKS = ("vqa", "winoground")
TASKS = TEXT_TASKS + IMAGE_TASKS
# Keys of an item that are not metadata (the pipeline's CompletionRankingDataset.__getitem__).
NOT_METADATA = ("sentences", "completions", "prefixes", "label", "image")


def read_task(data_path: Path, task: str, full_sentence_scores: bool = False, images=None) -> list[dict]:
    """Every item of the folder's .jsonl files for `task` (`images`: the image tasks' dataset, or None); one
    line naming the file and line of a record that is not in the task's format or names a missing picture."""
    if not data_path.is_dir():
        raise InputError(f"--data_path {data_path}: not a folder (the pipeline reads a folder of .jsonl files)")
    items = []
    for path in data_path.iterdir():
        if path.suffix != ".jsonl":
            continue
        with path.open() as f:
            for number, line in enumerate(f, 1):
                try:
                    item = decode(json.loads(line.strip()), path, task, full_sentence_scores, images)
                    if "image" in item:
                        item["image"] = replace(item["image"], where=f"{path}, line {number}")
                    items.append(item)
                except MissingImage as e:
                    raise InputError(f"{path}, line {number}: {e}") from None
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
                    what = f"no field {e}" if isinstance(e, KeyError) else str(e)
                    raise InputError(f"{path}, line {number}: not a {task} record ({what})") from None
    if not items:
        raise InputError(f"--data_path {data_path}: no .jsonl record in the folder")
    return items


def decode(raw: dict, path: Path, task: str, full_sentence_scores: bool, images=None) -> dict:
    if task == "blimp":
        return _blimp(raw, path)
    if task == "ewok":
        return _ewok(raw, full_sentence_scores)
    if task in ("wug_adj", "wug_past"):
        return _wug(raw, task)
    if task == "entity_tracking":
        return _entity_tracking(raw, path)
    if task == "comps":
        return _comps(raw, path)
    if task == "vqa":
        return _vqa(raw, images)
    if task == "winoground":
        return _winoground(raw, images)
    raise InputError(f"--task {task}: not a task of this scorer (tasks: {', '.join(TASKS)})")


def metadata(item: dict) -> dict:
    return {key: value for key, value in item.items() if key not in NOT_METADATA}


def _blimp(raw: dict, path: Path) -> dict:
    good, bad = raw["sentence_good"], raw["sentence_bad"]
    pair = {"sentences": [good, bad], "prefixes": [None, None], "completions": [good, bad], "label": 0}
    if "field" in raw:
        # BLiMP proper; the pipeline writes one field's name with a slash.
        field = "syntax/semantics" if raw["field"] == "syntax_semantics" else raw["field"]
        pair.update(field=field, UID=raw["UID"], linguistics_term=raw["linguistics_term"])
    else:  # the supplement: its file names the UID
        pair.update(field="supplement", UID=path.stem, linguistics_term="supplement")
    return pair


def _ewok(raw: dict, full_sentence_scores: bool) -> dict:
    sentences = [f"{raw['Context1']} {raw['Target1']}", f"{raw['Context1']} {raw['Target2']}"]
    completions = sentences if full_sentence_scores else [" " + raw["Target1"], " " + raw["Target2"]]
    return {
        "sentences": sentences,
        "prefixes": [raw["Context1"], raw["Context2"]],
        "completions": list(completions),
        "label": 0,
        "UID": raw["Domain"],
        "context_type": raw["ContextType"],
        "context_contrast": raw["ContextDiff"],
        "target_contrast": raw["TargetDiff"],
    }


def _wug(raw: dict, task: str) -> dict:
    sentences = raw["sentences"].split("\t")
    return {
        "sentences": sentences,
        "prefixes": [None],
        "completions": list(sentences),
        "ratio": float(raw["ratio"]),
        "label": 0,
        "UID": task,
    }


def _entity_tracking(raw: dict, path: Path) -> dict:
    prefix, options = raw["input_prefix"], raw["options"]
    return {
        "sentences": [prefix + option for option in options],
        "prefixes": [prefix for _ in options],
        "completions": list(options),
        "label": 0,
        "UID": f"{path.stem}_{raw['numops']}_ops",
    }


# COMPS' file names and the subsets the pipeline reports them as (any other file: the last).
_COMPS_SUBSETS = {"comps_base": "base", "comps_wugs": "wugs", "comps_wugs_dist-before": "wugs_dist_before"}


def _comps(raw: dict, path: Path) -> dict:
    phrase = raw["property_phrase"]
    return {
        "sentences": [f"{raw['prefix_acceptable']} {phrase}", f"{raw['prefix_unacceptable']} {phrase}"],
        "prefixes": [raw["prefix_acceptable"], raw["prefix_unacceptable"]],
        "completions": [phrase, phrase],
        "label": 0,
        "UID": _COMPS_SUBSETS.get(path.stem, "wugs_dist_in_between"),
    }


class MissingImage(LookupError):
    """A record names a picture the images dataset does not hold."""


@dataclass(frozen=True)
class Picture:
    """A record's picture, decoded only when it is scored (a full VQA set's pictures would not all fit in
    memory at once): the images dataset, the row and column, and the record's file and line."""

    images: object
    row: int
    column: str
    where: str = ""

    def load(self):
        """The RGB picture; one line naming the record where the dataset holds none there."""
        value = self.images[self.row][self.column]
        if value is None:
            raise InputError(f"{self.where}: image row {self.row} has no picture in column {self.column!r}")
        return value.convert("RGB")


def picture(images, row, column: str) -> Picture:
    """The picture at `images[row][column]` (a `datasets` dataset), checked to be a row and column of it
    (MissingImage saying which where not)."""
    if not isinstance(row, int) or not 0 <= row < len(images):
        raise MissingImage(f"image row {row!r} is not in the images dataset ({len(images)} rows)")
    if column not in images.column_names:
        raise MissingImage(f"the images dataset has no column {column!r} (columns: {', '.join(images.column_names)})")
    return Picture(images, row, column)


def _vqa(raw: dict, images) -> dict:
    answers = [raw["target_ans"], *raw["distractors"]]
    item = {
        "sentences": [" ".join([raw["question"], answer]) for answer in answers],
        "prefixes": [raw["question"] for _ in answers],
        "completions": [" " + answer for answer in answers],
        "label": 0,
        "UID": "vqa",
    }
    if images is not None:
        item["image"] = picture(images, raw["idx_in_hf_dataset"], "image")
    return item


def _winoground(raw: dict, images) -> dict:
    item = {
        "sentences": [raw["caption_0"], raw["caption_1"]],
        "prefixes": [None, None],
        "completions": [raw["caption_0"], raw["caption_1"]],
        "label": 0,
        "UID": "winoground",
        "Type": raw["collapsed_tag"],
        "Linguistic Feature": raw["tag"],
        "Linguistic Sub-Feature": " ".join([raw["tag"], raw["secondary_tag"]]),
    }
    if images is not None:
        item["image"] = picture(images, raw["image_idx"], raw["image_key"])
    return item
