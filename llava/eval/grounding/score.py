"""`python -m llava.eval.grounding score --task TASK PREDICTIONS.jsonl`: a grounding task's metrics, as
LLaVA-ST reports them, from a file of generated answers.

The predictions file holds one JSON object per line:

    {"id": "vid7-q2", "task": "stvg", "answer": "<the model's generated text>", "truth": {...}}

`id` is unique in the file, `task` is the scored task, `answer` the text as generated (coordinate tokens
or plain digits: llava.data.grounding_answers reads both). Every coordinate in `truth` is normalised to
[0, 1] of the picture's width and height, or of the clip's duration; boxes are [x1, y1, x2, y2]:

| task | truth | scores (llava.eval.grounding_metrics; ELC: grounding_captions) |
| --- | --- | --- |
| rec | `box` | mIoU, R1@0.5 |
| tvg | `span`: [start, end] | mIoU, R1@{0.3, 0.5, 0.7} |
| stvg | `span`, `frames`, `boxes` | tIoU, sIoU, vIoU: means and R@{0.3, 0.5, 0.7} |
| svg | `frames`, `boxes` | sIoU, vIoU |
| elc | `caption` (a string, or a list of them) | BLEU-1..4, METEOR, ROUGE-L, CIDEr |

`frames` is the number of frames of the clip (LLaVA-ST: the frames of its segment, `split`) and `boxes`
the true box of each frame that has one, keyed by the frame's index, 0 to frames - 1 (`{"0": [...],
"12": [...]}`). A predicted moment t (a `<TEMP-k>` token, t = k / 99, or a digit) is the frame
round(t * (frames - 1)), LLaVA-ST's mapping. Where an answer cannot be read, the item is a counted miss
(`misses`). IoU is computed in normalised units; LLaVA-ST rounds predicted boxes to whole pixels first.

The table is printed and written as JSON beside the predictions (`PREDICTIONS.scores.json`, or --out).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ...data import grounding_answers as answers
from ...errors import ArgumentParser, InputError, check_input_file, saving
from .. import grounding_captions, grounding_metrics

TASKS = ("rec", "tvg", "stvg", "svg", "elc")
# What each task's truth holds: field -> what it must be (checked per line, named in the error).
TRUTH_FIELDS = {
    "rec": ("box",),
    "tvg": ("span",),
    "stvg": ("span", "frames", "boxes"),
    "svg": ("frames", "boxes"),
    "elc": ("caption",),
}
CONVENTIONS = {
    "rec": "LLaVA-ST inference/src/metrics.py eval_rec; an unreadable answer is a miss (IoU 0) in the mean",
    "tvg": "LLaVA-ST inference/src/metrics.py eval_tvg (R1 counts IoU strictly above each threshold)",
    "stvg": "LLaVA-ST inference/src/metrics.py eval_stvg(task='stvg'); boxes compared in normalised units",
    "svg": "LLaVA-ST inference/src/metrics.py eval_stvg(task='svg'); boxes compared in normalised units",
    "elc": "LLaVA-ST inference/src/metrics.py eval_stvg(task='elc') caption_score: pycocoevalcap, PTB tokens",
}


# ------------------------------------------------------------------------------------------ reading
class BadLine(ValueError):
    """What is wrong with one line; the reader adds the file and line number."""


def _box(value, what: str) -> list[float]:
    if not grounding_metrics.well_formed(value, 4):
        raise BadLine(f"{what} is not a box [x1, y1, x2, y2] in [0, 1] with x1 <= x2 and y1 <= y2: {value!r}")
    return [float(v) for v in value]


def _span(value) -> list[float]:
    if not grounding_metrics.well_formed(value, 2):
        raise BadLine(f"truth.span is not [start, end] in [0, 1] with start <= end: {value!r}")
    return [float(v) for v in value]


def _frames(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadLine(f"truth.frames is not a count of frames (a whole number, 1 or more): {value!r}")
    return value


def _boxes(value, frames: int) -> dict[int, list[float]]:
    if not isinstance(value, dict) or not value:
        raise BadLine("truth.boxes is not an object of frame index -> box with at least one frame")
    boxes = {}
    for key, box in value.items():
        if not str(key).isdigit() or int(key) >= frames:
            raise BadLine(f"truth.boxes has the key {key!r}: not a frame index from 0 to {frames - 1}")
        boxes[int(key)] = _box(box, f"truth.boxes[{key!r}]")
    return boxes


def _caption(value) -> list[str]:
    captions = [value] if isinstance(value, str) else value
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
        raise BadLine(f"truth.caption is not a caption, or a list of captions, none blank: {value!r}")
    return captions


def read_truth(task: str, truth) -> dict:
    """A line's truth, checked and in the scorers' units (frame keys as numbers)."""
    if not isinstance(truth, dict):
        raise BadLine(f"truth is not an object: {truth!r}")
    missing = [field for field in TRUTH_FIELDS[task] if field not in truth]
    if missing:
        raise BadLine(f"truth has no {', '.join(missing)} (a {task} truth holds {', '.join(TRUTH_FIELDS[task])})")
    if task == "rec":
        return {"box": _box(truth["box"], "truth.box")}
    if task == "elc":
        return {"caption": _caption(truth["caption"])}
    checked = {} if task == "svg" else {"span": _span(truth["span"])}
    if task == "tvg":
        return checked
    frames = _frames(truth["frames"])
    return checked | {"frames": frames, "boxes": _boxes(truth["boxes"], frames)}


def _item(line: str, task: str) -> dict:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadLine(f"not JSON ({e.msg})") from None
    if not isinstance(raw, dict):
        raise BadLine("not a JSON object")
    missing = [key for key in ("id", "task", "answer", "truth") if key not in raw]
    if missing:
        raise BadLine(f"no {', '.join(missing)} (each line holds id, task, answer and truth)")
    if raw["task"] != task:
        raise BadLine(f"an item of task {raw['task']!r}, scored as {task!r} (--task)")
    if not isinstance(raw["answer"], str):
        raise BadLine(f"answer is not the generated text: {raw['answer']!r}")
    return {"id": raw["id"], "answer": raw["answer"], "truth": read_truth(task, raw["truth"])}


def read_predictions(path: str, task: str) -> list[dict]:
    """Every item of the predictions file, checked; an InputError naming the file and line of the first
    that is not one."""
    items, seen = [], {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (a predictions file is JSON lines)") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = _item(line, task)
            key = json.dumps(item["id"], sort_keys=True)
            if key in seen:
                raise BadLine(f"the id {item['id']!r} is also on line {seen[key]}")
        except BadLine as e:
            raise InputError(f"{path}, line {number}: {e}") from None
        seen[key] = number
        items.append(item)
    if not items:
        raise InputError(f"{path}: no predictions in the file")
    return items


# ------------------------------------------------------------------------------------------ scoring
def frame_index(moment: float, frames: int) -> int:
    # LLaVA-ST: frame split[0] + round(k / (num_frames - 1) * (duration - 1)) of bin k; here the moment is
    # already k / 99, and frames are counted from the segment's start. Python's round, as there.
    return round(moment * (frames - 1))


def predicted_boxes(answer: str, frames: int) -> dict[int, list[float] | None] | None:
    """An answer's tube as {frame: box or None}, frames as the truth counts them; None without a tube."""
    tube = answers.parse_tube(answer)
    if tube is None:
        return None
    return {frame_index(moment, frames): box for moment, box in tube.items()}


def _tube_items(items: list[dict], with_span: bool) -> list[dict]:
    scored = []
    for item in items:
        truth = item["truth"]
        scored_item = {"pred_boxes": predicted_boxes(item["answer"], truth["frames"]), "gt_boxes": truth["boxes"]}
        if with_span:
            scored_item |= {"pred_span": answers.parse_span(item["answer"]), "gt_span": truth["span"]}
        scored.append(scored_item)
    return scored


def score(task: str, items: list[dict]) -> dict:
    """The task's metrics over the checked items (read_predictions)."""
    if task == "rec":
        predicted = [answers.parse_box(item["answer"]) for item in items]
        return grounding_metrics.rec_scores(predicted, [item["truth"]["box"] for item in items])
    if task == "tvg":
        predicted = [answers.parse_span(item["answer"]) for item in items]
        return grounding_metrics.tvg_scores(predicted, [item["truth"]["span"] for item in items])
    if task in ("stvg", "svg"):
        return grounding_metrics.stvg_scores(_tube_items(items, task == "stvg"), with_span=task == "stvg")
    captions = [answers.elc_caption(item["answer"]) for item in items]
    scores = grounding_captions.caption_scores(captions, [item["truth"]["caption"] for item in items])
    # An answer with no caption in it scores as an empty caption, as in LLaVA-ST; counted here.
    return scores | {"n": len(items), "empty captions": sum(not c.strip() for c in captions)}


def table(scores: dict) -> str:
    """One metric a line, names aligned; fractions to 4 decimals."""
    width = max(len(name) for name in scores)
    return "\n".join(
        f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}"
        for name, value in scores.items()
    )


def default_out(predictions: str) -> str:
    path = Path(predictions)
    return str(path.with_name(path.stem + ".scores.json"))


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(prog="python -m llava.eval.grounding score", description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", metavar="PREDICTIONS.jsonl", help="one generated answer and its truth a line")
    parser.add_argument("--task", required=True, choices=TASKS, help="the task the file's items are")
    parser.add_argument("--out", help="where the scores go, as JSON (default: PREDICTIONS.scores.json beside it)")
    args = parser.parse_args(argv)
    check_input_file(args.predictions, "PREDICTIONS")
    if args.task == "elc":
        # Before reading a large file: the caption scorers need Java and pycocoevalcap.
        grounding_captions.require_scorers()
    items = read_predictions(args.predictions, args.task)
    scores = score(args.task, items)
    result = {
        "task": args.task,
        "predictions": os.path.abspath(args.predictions),
        "convention": CONVENTIONS[args.task],
        "scores": scores,
    }
    out = args.out or default_out(args.predictions)
    with saving(out, "the scores"):
        Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{args.task}: {len(items)} item{'s' if len(items) != 1 else ''} from {args.predictions}")
    print(table(scores))
    print(f"scores written to {out}")
    return result
