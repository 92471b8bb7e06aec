"""`python -m llava.eval.grounding predict --model-path CKPT --data DATA.json --task TASK [--out PREDICTIONS.jsonl]
[--score]`: a model's greedy answers to a grounding set, as the predictions file that `score` reads.

DATA is a grounding set in LLaVA's sample form, as llava.data.grounding_tasks writes it: each sample's last
turn is the reference answer, its coordinates written as numbers; the prompt is everything before it. The
set is read by the training pipeline (llava.eval.captions.load_items): for a model with coordinate tokens
the numbers of the prompt become placeholders whose values reach the model; for a model without them
(the plain-digits control) they stay text, and the model answers in digits.

Each sample gives one line `{"id", "task", "answer", "truth"}` (score.py's format). `answer` is the
generated text with special tokens kept (bin tokens such as `<WIDTH-012>` stay in it), cut at EOS, the
end of turn or padding. `truth` is the sample's own `"truth"` object where it has one; otherwise it is
read from the reference answer (llava.data.grounding_answers, digit form):

| task | truth from the reference answer |
| --- | --- |
| rec | `box`: its first box |
| tvg | `span`: its first span |
| stvg | `span`, then `frames` and `boxes` as for svg |
| svg | `frames`: the sample's `"frames"` where it has one, else the frames the model sees of the clip (its `mm_num_frames`); `boxes`: each `{t}: [box]` pair at frame round(t * (frames - 1)), score's mapping |
| elc | `caption`: the sample's `"caption"` where it has one, else the answer's caption as LLaVA-ST cuts it (grounding_answers.elc_caption) |

A reference answer that holds no such truth is an error naming the sample. Unreadable clips are logged
and left out of the file (counted in the summary). `--score` then scores the file (score.main).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ...data import grounding_answers as answers
from ...data.files import is_mixture, scan_sample_file, split_data_path
from ...data.templates import last_answer, trained_version
from ...errors import ArgumentParser, InputError, saving
from ...model.builder import load_pretrained_model
from ...modeling.vision_settings import VisionSettings
from ..captions import check_inputs, generate_captions, load_items
from . import score

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ truth
# A sample's own fields that the truth rule reads; training's sample reader keeps only LLaVA's, so they are
# read from the data files themselves.
OWN_FIELDS = ("truth", "frames", "caption")


def own_fields(data_path: str) -> dict[str, dict]:
    """{sample id: its OWN_FIELDS} of the data files (a YAML mixture's samples have none)."""
    fields = {}
    for path in split_data_path(data_path):
        if is_mixture(path):
            continue
        entries, _ = scan_sample_file(path)  # problems: check_inputs has refused the file already
        for place, entry in entries:
            if isinstance(entry, dict):
                fields[str(entry.get("id", place))] = {k: entry[k] for k in OWN_FIELDS if k in entry}
    return fields


def _tube_boxes(answer: str, frames: int) -> dict[str, list[float]] | None:
    """The reference tube as score wants it: {frame index as text: box}, frames mapped as score maps them."""
    tube = answers.parse_tube(answer)
    if tube is None:
        return None
    boxes = {str(score.frame_index(moment, frames)): box for moment, box in sorted(tube.items()) if box is not None}
    return boxes or None


def _video_truth(task: str, sample: dict, answer: str, frames: int) -> dict:
    truth = {}
    if task == "stvg":
        truth["span"] = answers.parse_span(answer)
    frames = sample.get("frames", frames)
    return truth | {"frames": frames, "boxes": _tube_boxes(answer, frames) if isinstance(frames, int) else None}


def truth_from_answer(task: str, sample: dict, frames: int) -> dict:
    """A sample's truth read from its reference answer (see the module docstring); a field that the answer
    does not give is None (reference_truth names it)."""
    answer = last_answer(sample["conversations"])
    if task == "rec":
        return {"box": answers.parse_box(answer)}
    if task == "tvg":
        return {"span": answers.parse_span(answer)}
    if task == "elc":
        caption = sample.get("caption", answers.elc_caption(answer))
        return {"caption": caption.strip() if isinstance(caption, str) else caption}
    return _video_truth(task, sample, answer, frames)


def reference_truth(task: str, sample: dict, frames: int) -> dict:
    """The truth of one sample's line: its `"truth"` object, else read from its reference answer; checked as
    score reads it, an InputError naming the sample where it is not one."""
    where = f"--data: sample {sample['id']!r}"
    if "truth" in sample:
        truth = sample["truth"]
    else:
        truth = truth_from_answer(task, sample, frames)
        missing = [field for field, value in truth.items() if value in (None, "")]
        if missing:
            answer = last_answer(sample["conversations"])
            raise InputError(f"{where}: its reference answer gives no {', '.join(missing)} for {task}: {answer!r}")
    try:
        score.read_truth(task, truth)
    except score.BadLine as e:
        raise InputError(f"{where}: {e}") from None
    return truth


# ------------------------------------------------------------------------------------------ predicting
def predict(
    model,
    tokenizer,
    image_processor,
    data_path: str,
    samples: list[dict],
    task: str,
    video_folder=None,
    image_folder=None,
    batch_size: int = 16,
    max_new_tokens: int = 128,
    progress: bool = False,
) -> tuple[list[dict], list[dict]]:
    """(the predictions file's lines, the skipped samples) of a loaded model over the set: `samples` are
    check_inputs' (conversations with their numbers as written), each with its OWN_FIELDS (own_fields)."""
    # Checked before any clip is read; the frames the model sees, as dataset_for_model reads clips.
    frames = VisionSettings.from_config(model.config).num_frames
    truths = {sample["id"]: reference_truth(task, sample, frames) for sample in samples}
    version = trained_version(model.config)
    # The set read again for the model: its numbers become placeholders where the tokenizer has coordinate
    # tokens (load_samples does that only when it reads the file for the dataset).
    dataset, items = load_items(model, tokenizer, image_processor, data_path, video_folder, image_folder, version)
    if not items:
        raise InputError(f"--data: no sample could be read, all {len(dataset.skipped)} were skipped ({data_path})")
    texts = generate_captions(
        model, tokenizer, items, version, batch_size, max_new_tokens, progress, keep_special_tokens=True
    )
    lines = [
        {"id": item["id"], "task": task, "answer": text, "truth": truths[item["id"]]}
        for item, text in zip(items, texts)
    ]
    return lines, dataset.skipped


def write_predictions(path: str, lines: list[dict]) -> None:
    with saving(path, "the predictions"):
        Path(path).write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")


def default_out(data_path: str, task: str) -> str:
    """DATA.TASK.predictions.jsonl beside the data file."""
    path = Path(data_path.split(",")[0])
    return str(path.with_name(f"{path.stem}.{task}.predictions.jsonl"))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m llava.eval.grounding predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", help="the language model of an adapter-only run given as --model-path")
    parser.add_argument("--data", required=True, help="the grounding set (JSON/JSONL), reference answers last")
    parser.add_argument("--task", required=True, choices=score.TASKS, help="the task the set's samples are")
    parser.add_argument("--video-folder")
    parser.add_argument("--image-folder")
    parser.add_argument("--out", help="the predictions file (default: DATA.TASK.predictions.jsonl beside --data)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128, help="an STVG tube takes 7 tokens a frame")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--score", action="store_true", help="then score the file and print the table")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for flag in ("batch_size", "max_new_tokens"):
        if getattr(args, flag) < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be 1 or more, not {getattr(args, flag)}")
    out = args.out or default_out(args.data, args.task)
    from ...serve.checks import check_output_file

    check_output_file(out)
    samples = check_inputs(args.model_path, args.data, args.video_folder, args.image_folder, args.model_base)
    fields = own_fields(args.data)
    samples = [sample | fields.get(sample["id"], {}) for sample in samples]
    tokenizer, model, image_processor, _ = load_pretrained_model(args.model_path, args.model_base, device=args.device)
    lines, skipped = predict(
        model,
        tokenizer,
        image_processor,
        args.data,
        samples,
        args.task,
        args.video_folder,
        args.image_folder,
        args.batch_size,
        args.max_new_tokens,
        progress=True,
    )
    write_predictions(out, lines)
    print(f"{args.task}: {len(lines)} predictions written to {out} ({len(skipped)} unreadable samples skipped)")
    result = {"predictions": out, "lines": lines, "skipped": skipped}
    if args.score:
        result["scores"] = score.main([out, "--task", args.task])
    return result
