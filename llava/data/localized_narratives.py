"""Localized Narratives -> the three BabyLM training conditions, as data files training reads.

    python -m llava.data.localized_narratives IN.jsonl --image_folder DIR --out_dir DIR [--word_limit N]

IN.jsonl is a public Localized Narratives file: one narrative per line, with `dataset_id`, `image_id`,
`annotator_id`, `caption`, `timed_caption` (utterances with their `start_time` and `end_time` in
seconds) and `traces` (the mouse trace, segments of points `{x, y, t}`: x and y fractions of the image's
width and height, which may stray a little outside [0, 1]; t in seconds). OUT_DIR gets:

- `text.jsonl`: the caption alone, a text-only sample (the fork's `_t` condition);
- `text_image.jsonl`: the image, and the caption as the answer to a request to describe it (`_ti`);
- `interleaved.jsonl`: the image, and the caption with each utterance followed by the box of the trace
  points drawn while it was said (`_tim`; LLaVA-ST's dense grounded captioning, grounding_tasks.dgc);
- `dropped.jsonl`: each narrative left out of all three, with the reason (no caption, no image file).

Boxes. An utterance's box bounds the trace points (of every segment) whose t lies within the utterance's
[start_time, end_time], both ends included: [min x, min y, max x, max y], each clipped to [0, 1]. An
utterance with fewer than 2 such points, or with no words, gets no box. The utterances are set over the
caption's own words, so that all three conditions hold the same text: the first utterance takes as many
of the caption's words as it has, and so on. A narrative whose utterances do not have as many words as
its caption is written without boxes (counted in the summary).

Words are counted as training counts them (words.py: coordinates are not words), on the caption. With
--word_limit N, narratives are taken in file order while the words so far stay within N: all three files
stop at the same narrative and hold the same words. The image is `--image_folder/IMAGE_ID.jpg` (also
.jpeg, .png, COCO's zero-padded `000000IMAGE_ID.jpg`), or the same under a subfolder named by the
dataset_id; samples name it relative to --image_folder, the folder to train with.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass

from .. import errors
from ..errors import InputError
from .files import DataProblem, data_error
from .grounding_tasks import dgc
from .words import count_words

logger = logging.getLogger(__name__)

OUTPUTS = {"text": "text.jsonl", "text_image": "text_image.jsonl", "interleaved": "interleaved.jsonl"}
DROPPED = "dropped.jsonl"
DESCRIBE = "Please describe in detail the contents of the image."
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class Narrative:
    """One narrative, read and checked: `pieces` are the caption's words grouped by utterance, each with
    its box (or None); None where the utterances do not fit the caption."""

    id: str
    dataset_id: str
    image_id: str
    caption: str
    pieces: list[tuple[str, list[float] | None]] | None


# ------------------------------------------------------------------------------------------ reading
def read_narrative(entry) -> Narrative:
    """A narrative from its JSON line; ValueError says what is wrong with it."""
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    missing = [key for key in ("image_id", "caption", "timed_caption", "traces") if key not in entry]
    if missing:
        raise ValueError(f"a narrative without {', '.join(repr(k) for k in missing)}")
    if not isinstance(entry["caption"], str):
        raise ValueError("'caption' is not text")
    dataset_id, image_id = str(entry.get("dataset_id", "")), str(entry["image_id"])
    utterances = _utterances(entry["timed_caption"])
    points = _points(entry["traces"])
    caption = " ".join(entry["caption"].split())
    narrative_id = "_".join(str(part) for part in (dataset_id, image_id, entry.get("annotator_id", "")) if part != "")
    return Narrative(narrative_id, dataset_id, image_id, caption, _pieces(caption, utterances, points))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _utterances(timed_caption) -> list[tuple[str, float, float]]:
    if not isinstance(timed_caption, list):
        raise ValueError("'timed_caption' is not a list")
    utterances = []
    for index, item in enumerate(timed_caption):
        fields = (item.get("utterance"), item.get("start_time"), item.get("end_time")) if isinstance(item, dict) else ()
        if len(fields) != 3 or not isinstance(fields[0], str) or not (_number(fields[1]) and _number(fields[2])):
            raise ValueError(f"timed_caption[{index}] is not {{utterance, start_time, end_time}} (text, seconds)")
        utterances.append((fields[0], float(fields[1]), float(fields[2])))
    return utterances


def _points(traces) -> list[tuple[float, float, float]]:
    """Every trace point `(x, y, t)`, of every segment."""
    if not isinstance(traces, list) or not all(isinstance(segment, list) for segment in traces):
        raise ValueError("'traces' is not a list of segments (lists of {x, y, t} points)")
    points = []
    for number, segment in enumerate(traces):
        for point in segment:
            values = [point.get(axis) for axis in "xyt"] if isinstance(point, dict) else []
            if len(values) != 3 or not all(_number(v) for v in values):
                raise ValueError(f"traces[{number}] has a point that is not {{x, y, t}} numbers: {point!r}")
            points.append((float(values[0]), float(values[1]), float(values[2])))
    return points


def utterance_box(points: list[tuple[float, float, float]], start: float, end: float) -> list[float] | None:
    """The box of the points drawn within [start, end], clipped to [0, 1]; None for fewer than 2 points."""
    inside = [(x, y) for x, y, t in points if start <= t <= end]
    if len(inside) < 2:
        return None
    xs, ys = [x for x, _ in inside], [y for _, y in inside]
    return [_clip(min(xs)), _clip(min(ys)), _clip(max(xs)), _clip(max(ys))]


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def _pieces(caption: str, utterances, points) -> list[tuple[str, list[float] | None]] | None:
    """The caption's words, grouped as the utterances group theirs, each group with its utterance's box."""
    words = caption.split()
    counts = [len(text.split()) for text, _, _ in utterances]
    if sum(counts) != len(words):
        return None
    pieces, first = [], 0
    for (_, start, end), count in zip(utterances, counts):
        if count:
            box = utterance_box(points, start, end)
            pieces.append((" ".join(words[first : first + count]), box))
        first += count
    return pieces


def find_image(folder: str, narrative: Narrative) -> str | None:
    """The image's path relative to `folder` (see the module's doc for the names looked for), or None."""
    names = [narrative.image_id + suffix for suffix in IMAGE_SUFFIXES]
    if narrative.image_id.isdigit():  # COCO names its files by the zero-padded id
        names.append(f"{int(narrative.image_id):012d}.jpg")
    for sub in ("", narrative.dataset_id) if narrative.dataset_id else ("",):
        for name in names:
            relative = os.path.join(sub, name) if sub else name
            if os.path.isfile(os.path.join(folder, relative)):
                return relative.replace(os.sep, "/")
    return None


# ------------------------------------------------------------------------------------------ samples
def condition_samples(narrative: Narrative, image: str) -> dict[str, dict]:
    """The narrative's sample in each condition."""
    answer = {"from": "gpt", "value": narrative.caption}
    pieces = narrative.pieces if narrative.pieces is not None else [(narrative.caption, None)]
    return {
        "text": {"id": narrative.id, "conversations": [answer]},
        "text_image": {
            "id": narrative.id,
            "image": image,
            "conversations": [{"from": "human", "value": f"<image>\n{DESCRIBE}"}, answer],
        },
        "interleaved": dgc(narrative.id, pieces, image=image),
    }


@dataclass
class Summary:
    read: int = 0
    written: int = 0
    words: int = 0
    without_boxes: int = 0
    dropped: int = 0
    boxes: int = 0
    stopped_at_limit: bool = False


def convert(path: str, image_folder: str, out_dir: str, word_limit: int | None = None) -> Summary:
    """Writes the three conditions (and dropped.jsonl) to `out_dir`: every file whole, or none changed
    (each is written beside its name and renamed at the end). A malformed line is an InputError that
    lists every problem of the file."""
    os.makedirs(out_dir, exist_ok=True)
    names = {**OUTPUTS, "dropped": DROPPED}
    partial = {key: os.path.join(out_dir, name + ".partial") for key, name in names.items()}
    summary, problems = Summary(), []
    try:
        with contextlib.ExitStack() as stack:
            files = {key: stack.enter_context(open(file, "w", encoding="utf-8")) for key, file in partial.items()}
            _write_conditions(path, image_folder, word_limit, files, summary, problems)
        if problems:
            raise data_error(problems)
        for key, name in names.items():
            os.replace(partial[key], os.path.join(out_dir, name))
    finally:
        for file in partial.values():
            if os.path.exists(file):
                os.remove(file)
    return summary


def _write_conditions(path, image_folder, word_limit, files, summary: Summary, problems: list) -> None:
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            summary.read += 1
            try:
                narrative = read_narrative(json.loads(line))
            except json.JSONDecodeError as e:
                problems.append(DataProblem(path, f"not JSON: {e.msg[0].lower()}{e.msg[1:]}", line=number))
                continue
            except ValueError as e:
                problems.append(DataProblem(path, str(e), line=number))
                continue
            if problems:  # the file will be refused: only look for more problems
                continue
            words = count_words(narrative.caption)
            image = find_image(image_folder, narrative) if words else None
            if image is None:
                reason = "no caption" if not words else f"no image file for {narrative.image_id} in {image_folder}"
                _write(files["dropped"], {"id": narrative.id, "line": number, "reason": reason})
                summary.dropped += 1
                continue
            if word_limit is not None and summary.words + words > word_limit:
                summary.stopped_at_limit = True
                break
            for key, sample in condition_samples(narrative, image).items():
                _write(files[key], sample)
            summary.written += 1
            summary.words += words
            summary.without_boxes += narrative.pieces is None
            summary.boxes += sum(box is not None for _, box in narrative.pieces or [])


def _write(file, record: dict) -> None:
    file.write(json.dumps(record, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------ command
def _positive_int(text: str) -> int:
    try:
        value = int(float(text))  # 100e6 as BabyLM writes its limits
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of words") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def main(argv=None) -> int:
    parser = errors.ArgumentParser(
        prog="python -m llava.data.localized_narratives", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("narratives", help="a Localized Narratives JSONL file")
    parser.add_argument("--image_folder", required=True, help="the images the narratives describe")
    parser.add_argument("--out_dir", required=True, help="where the three conditions are written")
    parser.add_argument("--word_limit", type=_positive_int, help="stop before the words would pass this many")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    errors.check_input_file(args.narratives, "the narratives file")
    errors.check_input_folder(args.image_folder, "--image_folder")
    errors.check_writable(args.out_dir, "--out_dir")
    with errors.saving(args.out_dir, "the three conditions"):
        summary = convert(args.narratives, args.image_folder, args.out_dir, args.word_limit)
    if not summary.written:
        raise InputError(
            f"none of the {summary.read} narratives has a caption and an image under --image_folder "
            f"(each and its reason: {os.path.join(args.out_dir, DROPPED)})"
        )
    logger.info(
        "%d of %d narratives written to %s (%s words, %d boxes; %d without boxes: their utterances do not "
        "have the caption's words)%s; dropped %d (%s)",
        summary.written,
        summary.read,
        ", ".join(os.path.join(args.out_dir, name) for name in OUTPUTS.values()),
        f"{summary.words:,}",
        summary.boxes,
        summary.without_boxes,
        f"; stopped at --word_limit {args.word_limit:,}" if summary.stopped_at_limit else "",
        summary.dropped,
        os.path.join(args.out_dir, DROPPED),
    )
    return 0


if __name__ == "__main__":
    sys.exit(errors.entry_point(main)())
