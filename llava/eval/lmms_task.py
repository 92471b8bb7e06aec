"""Local lmms-eval tasks over a LLaVA caption data set (the demo's validation clips, for instance).

    python -m llava.eval.lmms_task --data VAL.json --video-folder DIR --out TASKDIR [--name llava_demo] [--limit N]
        [--colour-words FILE]

writes `TASKDIR/docs.jsonl` (one document per sample: the clip's absolute path, its reference caption
and, for the colour tasks, the candidate captions and the colour words) and one YAML file per task. Run
them with lmms-eval's own command line, `--include_path TASKDIR`, in the environment `make lmms-env`
builds (see the Makefile):

    .venv-lmms/bin/python -m lmms_eval --model llava_vid --tasks llava_demo_caption,llava_demo_colour \\
        --model_args pretrained=CKPT,conv_template=plain,device=cpu,device_map=auto,torch_dtype=float32,max_frames_num=8,force_sample=True \\
        --include_path TASKDIR --output_path OUT --batch_size 1
    .venv-lmms/bin/python -m lmms_eval --model llava_onevision --tasks llava_demo_caption \\
        --model_args pretrained=CKPT,conv_template=plain,device=cpu,device_map=auto,max_frames_num=8 ...
    .venv-lmms/bin/python -m lmms_eval --model llava --tasks llava_demo_caption_image,llava_demo_colour_image \\
        --model_args pretrained=CKPT,conv_template=plain,device=cpu,device_map=auto ...

Model arguments, why: `device_map=auto` with `device=cpu` is how lmms-eval's LLaVA classes run without
CUDA (any other device_map makes them pick `cuda:N`); `conv_template=plain` is the template our caption
models train with (a chat model names its own, e.g. `qwen_1_5`); `max_frames_num` = the model's frame
count (`mm_num_frames`); llava_vid needs `force_sample=True` to take that many frames spread over the clip
(otherwise it takes one frame per second), and `torch_dtype=float32` (its default is float16).

Two faults of lmms-eval 0.7.3 itself, both in code our model never sees: its evaluator hands a
loglikelihood answer to the task as a string (see `_loss`, worked around here), and `llava_onevision`'s
loglikelihood reads an attribute it never sets (`self.metadata`, models/simple/llava_onevision.py:292),
so the colour tasks fail under that class with an AttributeError; it answers them once the attribute
exists (`lm.metadata = {}` on the model object, as tests/test_lmms_eval.py does in-process).

Tasks (`{name}` is `--name`):

- `{name}_caption`, for the video classes (`llava_vid`, `llava_onevision`; the visual is the clip's path):
  generate_until, greedy, scored with `llava.eval.metrics` against the sample's caption: `bleu4` (corpus
  BLEU-4, 0-100), `cider` (corpus CIDEr-D, 0-10) and, where the samples carry `attributes.colour` (as
  the demo's do), `colour_accuracy` (share of captions that name the clip's colour and no other).
- `{name}_colour`, for the video classes, where samples carry `attributes.colour`: multiple_choice, which
  lmms-eval answers with loglikelihood requests. The candidates are the sample's caption with its colour
  word replaced by each colour's word in the same agreement; the one with the lowest loss is the model's
  choice (`acc`); `caption_loss` is the mean per-token loss of the true caption.
- `{name}_caption_image` and `{name}_colour_image`: the same over one frame of each clip (the middle one),
  handed to the model as a PIL image, for lmms-eval's image class `llava`.

The colour tasks read a caption's colour words with the data set's own vocabulary (colour_words.py):
`--colour-words FILE`, by default `colour_words.json` beside --data (the demo writes one there). Each
document carries the words it is scored with, since lmms-eval hands a scoring function the document only.

The YAML files name this module's functions (`!function llava.eval.lmms_task.doc_to_video`): lmms-eval
imports them by module name when no utils.py sits beside the YAML, so the task logic lives here, once.
The question text (`doc_to_text`) is dropped by the plain template, which shows a caption model only the
visual block; chat templates put it in the user turn.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import sys
from pathlib import Path

from ..data.files import read_sample_file
from ..data.templates import last_answer
from ..errors import (
    ArgumentParser,
    InputError,
    MissingInputFile,
    UsageError,
    check_input_file,
    check_input_folder,
    entry_point,
    listing,
    saving,
)
from .colour_words import COLOUR_WORDS_FILE, ColourWords, read_colour_words
from .metrics import bleu4, cider, tokenize_caption

logger = logging.getLogger(__name__)

QUESTION = "Descrivi il video in una frase."
DOCS_FILE = "docs.jsonl"
MAX_NEW_TOKENS = 32


# ------------------------------------------------------------------------------ documents
def reference_caption(sample: dict) -> str:
    """The sample's last answer, stripped; InputError where it has none (or an empty one)."""
    answer = last_answer(sample.get("conversations", []))
    if not isinstance(answer, str) or not answer.strip():
        raise InputError(f"sample {sample.get('id')!r} has no answer (gpt turn) to use as its reference caption")
    return answer.strip()


def _colour_choices(caption: str, attributes: dict, words: ColourWords, sample_id) -> list[str]:
    """The caption with its colour word replaced by each colour, in the order of `words`, each in the form
    that agrees with the clip's shape noun and count (attributes `shape`, `count`; "due croci rosse" ->
    "due croci verdi"; the colour's name where the sample does not say)."""
    colour = attributes["colour"]
    if colour not in words.colours:
        raise InputError(f"sample {sample_id!r}: colour {colour!r} is not one of {', '.join(words.names)}")
    pattern = re.compile(rf"\b({'|'.join(map(re.escape, sorted(words.forms(colour))))})\b")
    if len(pattern.findall(caption)) != 1:
        raise InputError(
            f"sample {sample_id!r}: its caption {caption!r} does not name its colour {colour!r} exactly once"
        )
    shape, count = attributes.get("shape"), attributes.get("count", 1)
    return [pattern.sub(words.word(name, shape, count), caption) for name in words.names]


def make_docs(data_path, video_folder, limit: int | None = None, colour_words: ColourWords | None = None) -> list[dict]:
    """One lmms-eval document per video sample of a LLaVA JSON / JSON-lines file; a sample's colour
    (`attributes.colour`) is asked about where `colour_words` are given. A problem of the data is one
    InputError line naming the file (and the sample); videos missing from `video_folder` are listed
    together (a MissingInputFile, which is a FileNotFoundError)."""
    data_path = str(data_path)
    check_input_file(data_path, "--data")
    check_input_folder(str(video_folder), "--video-folder")
    docs, missing = [], []
    for sample in read_sample_file(data_path):
        if "video" not in sample:
            continue  # image and text-only samples have no clip to show the video classes
        path = os.path.abspath(os.path.join(video_folder, sample["video"]))
        if not os.path.isfile(path):
            missing.append(sample["video"])
            continue
        try:
            doc = {"id": str(sample.get("id", len(docs))), "video": path, "caption": reference_caption(sample)}
            attributes = sample.get("attributes", {})
            colour = attributes.get("colour")
            if colour is not None and colour_words is not None:
                doc["colour"] = colour
                doc["choices"] = _colour_choices(doc["caption"], attributes, colour_words, doc["id"])
                doc["answer"] = colour_words.names.index(colour)
                doc["colour_forms"] = colour_words.colour_of()
        except InputError as e:
            raise InputError(f"--data {e} ({data_path})") from None
        docs.append(doc)
        if limit is not None and len(docs) >= limit:
            break
    if missing:
        shown = listing(missing, 5, ", ")
        raise MissingInputFile(
            f"--data names {len(missing)} videos that do not exist under --video-folder: {shown} ({video_folder})"
        )
    if not docs:
        raise InputError(f"--data holds no video sample ({data_path})")
    return docs


# ---------------------------------------------------------------- functions the YAML files name
def doc_to_video(doc: dict) -> list[str]:
    """The clip's path: lmms-eval's video classes decode it themselves."""
    return [doc["video"]]


def doc_to_frame(doc: dict) -> list:
    """The middle frame of the clip as a PIL image, for the image class."""
    from PIL import Image

    from ..data.video import read_video_frames

    return [Image.fromarray(read_video_frames(doc["video"], 1)[0])]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs=None) -> str:
    return QUESTION


def doc_to_caption(doc: dict) -> str:
    return doc["caption"]


def doc_to_choice(doc: dict) -> list[str]:
    return doc["choices"]


def doc_to_answer(doc: dict) -> int:
    return doc["answer"]


def named_colours(caption: str, colour_forms: dict[str, str]) -> set[str]:
    """The colours a caption names, in any of their forms (`colour_forms`: word -> colour; "rosse" names
    rosso)."""
    return {colour_forms[word] for word in tokenize_caption(caption) if word in colour_forms}


def process_caption(doc: dict, results: list[str]) -> dict:
    """Per-sample values; the aggregations below turn them into corpus scores."""
    caption = results[0]
    pair = {"hypothesis": caption, "reference": doc["caption"]}
    out = {"bleu4": pair, "cider": pair}
    if doc.get("colour") is not None:
        out["colour_accuracy"] = float(named_colours(caption, doc["colour_forms"]) == {doc["colour"]})
    return out


def _corpus(items: list[dict]) -> tuple[list[str], list[list[str]]]:
    return [i["hypothesis"] for i in items], [[i["reference"]] for i in items]


def _loss(result) -> float:
    """The loss of one loglikelihood answer. lmms-eval's LLaVA classes answer `(loss, is_greedy)`, the mean
    negative log-likelihood per continuation token; lmms-eval 0.7.3's evaluator hands it on as the tuple's
    str() (api/instance.py, unwrap_generation_output), which breaks its own multiple_choice scoring
    ("too many values to unpack"), so this task scores the choices itself and reads either form."""
    if isinstance(result, str):
        result = ast.literal_eval(result)
    loss, _greedy = result
    return float(loss)


def process_choice(doc: dict, results: list) -> dict:
    """The choice with the lowest loss is the model's answer (`acc`); `caption_loss` is the true caption's."""
    losses = [_loss(result) for result in results]
    chosen = min(range(len(losses)), key=losses.__getitem__)
    return {"acc": float(chosen == doc["answer"]), "caption_loss": losses[doc["answer"]]}


def aggregate_bleu4(items: list[dict]) -> float:
    return bleu4(*_corpus(items))


def aggregate_cider(items: list[dict]) -> float:
    return cider(*_corpus(items))


def aggregate_mean(values: list[float]) -> float:
    return sum(values) / len(values)


# ------------------------------------------------------------------------------ YAML files
# The module's import name (not __name__, which is "__main__" under `python -m`).
MODULE = "llava.eval.lmms_task"


def _function(name: str) -> str:
    return f"!function {MODULE}.{name}"


def _task_yaml(task: str, docs_path: str, visual: str, kind: str, with_colour: bool) -> str:
    head = [
        f"task: {task}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(docs_path)}",
        "test_split: test",
        f"doc_to_visual: {_function(visual)}",
        f"doc_to_text: {_function('doc_to_text')}",
    ]
    if kind == "caption":
        metrics = [("bleu4", "aggregate_bleu4"), ("cider", "aggregate_cider")]
        if with_colour:
            metrics.append(("colour_accuracy", "aggregate_mean"))
        body = [
            "output_type: generate_until",
            f"doc_to_target: {_function('doc_to_caption')}",
            f"process_results: {_function('process_caption')}",
            "generation_kwargs:",
            f"  max_new_tokens: {MAX_NEW_TOKENS}",
            "  temperature: 0",
            "  do_sample: false",
            "  num_beams: 1",
            "metric_list:",
            *[
                line
                for metric, aggregation in metrics
                for line in (
                    f"  - metric: {metric}",
                    f"    aggregation: {_function(aggregation)}",
                    "    higher_is_better: true",
                )
            ],
        ]
    else:
        body = [
            "output_type: multiple_choice",
            f"doc_to_choice: {_function('doc_to_choice')}",
            f"doc_to_target: {_function('doc_to_answer')}",
            # The candidates are whole captions, scored as the model writes them: nothing in between.
            'target_delimiter: ""',
            f"process_results: {_function('process_choice')}",
            "metric_list:",
            "  - metric: acc",
            f"    aggregation: {_function('aggregate_mean')}",
            "    higher_is_better: true",
            "  - metric: caption_loss",
            f"    aggregation: {_function('aggregate_mean')}",
            "    higher_is_better: false",
        ]
    return "\n".join(head + body + ["metadata:", "  version: 1.0", ""])


def find_colour_words(data_path, given=None) -> ColourWords | None:
    """The colour words of `given` (--colour-words), else of the colour_words.json beside `data_path`;
    None where neither is given nor there."""
    if given is not None:
        check_input_file(str(given), "--colour-words")
        return read_colour_words(given)
    beside = Path(data_path).parent / COLOUR_WORDS_FILE
    return read_colour_words(beside) if beside.is_file() else None


def write_tasks(
    data_path, video_folder, out, name: str = "llava_demo", limit: int | None = None, colour_words=None
) -> list[str]:
    """Writes the documents and the task YAML files into `out`; returns the task names. `colour_words`:
    the file of the words each colour is named with (find_colour_words)."""
    from ..serve.checks import check_output_folder

    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise UsageError(f"--name {name!r}: a task name prefix has letters, digits and underscores only")
    check_output_folder(str(out))
    words = find_colour_words(data_path, colour_words)
    docs = make_docs(data_path, video_folder, limit, words)
    out = Path(out)
    docs_path = str((out / DOCS_FILE).resolve())
    with_colour = all("colour" in doc for doc in docs)
    if not with_colour:
        reason = (
            "not every sample has attributes.colour"
            if words
            else f"no colour words to read the captions with (--colour-words, or {COLOUR_WORDS_FILE} beside --data)"
        )
        logger.warning("%s: writing the caption tasks only, without colour_accuracy", reason)
    tasks = []
    with saving(str(out), "the lmms-eval tasks"):
        out.mkdir(parents=True, exist_ok=True)
        with open(docs_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs)
        for suffix, visual in (("", "doc_to_video"), ("_image", "doc_to_frame")):
            for kind in ("caption", "colour") if with_colour else ("caption",):
                task = f"{name}_{kind}{suffix}"
                (out / f"{task}.yaml").write_text(
                    _task_yaml(task, docs_path, visual, kind, with_colour), encoding="utf-8"
                )
                tasks.append(task)
    return tasks


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m llava.eval.lmms_task", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="LLaVA JSON or JSON-lines file (video samples are used)")
    parser.add_argument("--video-folder", required=True, help="folder the samples' video paths are relative to")
    parser.add_argument("--out", required=True, help="folder to write docs.jsonl and the task YAML files into")
    parser.add_argument("--name", default="llava_demo", help="task name prefix (default: llava_demo)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N video samples")
    parser.add_argument(
        "--colour-words",
        help=f"JSON file of the words each colour is named with, for the colour tasks (default: {COLOUR_WORDS_FILE} "
        "beside --data, where there is one)",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tasks = write_tasks(args.data, args.video_folder, args.out, args.name, args.limit, args.colour_words)
    print(f"wrote {', '.join(tasks)} to {args.out} (lmms-eval: --include_path {args.out} --tasks {','.join(tasks)})")
    return 0


# The command line: an expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status (a
# traceback only for a bug, or with LLAVA_DEBUG=1); main itself raises, for callers in Python.
cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(cli())
