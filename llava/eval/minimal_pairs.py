"""Grammar on minimal pairs, scored with lm-evaluation-harness's BLiMP convention.

    python -m llava.eval.minimal_pairs --model-path CKPT --pairs FILE_OR_DIR [FILE_OR_DIR ...]

A minimal pair is one JSONL line in BLiMP's form: `sentence_good` and `sentence_bad`, with optional
grouping fields (`group`; BLiMP's own `UID`, `linguistics_term`, `field`). A folder stands for its *.jsonl
files. A pair is right when the language model gives the good sentence the higher log-probability, each
sentence scored whole after the model's end-of-text token.

lm-evaluation-harness (`lm-eval`) does the scoring, with its BLiMP task definition (multiple choice,
empty context, choices [good, bad], each sentence with a leading space after the end-of-text token,
accuracy over all pairs) written here for each file as a local task, so no data is downloaded. These are
lm-eval's numbers, not the 2025 BabyLM pipeline's: that pipeline tokenizes each sentence with the model's
own tokenizer (no leading space), leaves the first token it returns unscored, and averages accuracies per
UID, so on the same model and pairs it reports other values. The model scored is the checkpoint's
language model as a stock transformers model (llava.eval.export_lm.to_stock, the model `export_lm`
writes), held in memory.

Reported: accuracy over all pairs (each pair weighs the same), per file, and per group: the value of
`--group-by` (default: the `group` field, else `UID`, else the file's name).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..data.files import DataProblem, data_error, scan_sample_file
from ..errors import ArgumentParser, InputError, MissingInputFile, UserError, entry_point

logger = logging.getLogger("llava.eval.minimal_pairs")

CHANCE = 0.5  # two sentences, one right
DEFAULT_GROUP_FIELDS = ("group", "UID")


@dataclass(frozen=True)
class PairFile:
    path: str
    pairs: list[dict]

    @property
    def name(self) -> str:
        return Path(self.path).stem


def pair_files(paths: list[str]) -> list[str]:
    """The JSONL files `paths` name (a folder: its *.jsonl, sorted); one InputError line for what is missing."""
    files, missing, empty = [], [], []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(str(p) for p in Path(path).glob("*.jsonl"))
            files += found
            if not found:
                empty.append(path)
        elif os.path.isfile(path):
            files.append(path)
        else:
            missing.append(path)
    if missing:
        raise MissingInputFile(f"--minimal-pairs: no such file or folder ({', '.join(missing)})")
    if empty:
        raise InputError(f"--minimal-pairs: the folder holds no .jsonl file ({', '.join(empty)})")
    return list(dict.fromkeys(files))


def read_pair_files(paths: list[str]) -> list[PairFile]:
    """Every pair of every file, checked: each problem of every file in one InputError line."""
    read, problems = [], []
    for path in pair_files(paths):
        entries, file_problems = scan_sample_file(path)
        pairs = []
        for place, entry in entries:
            bad = [key for key in ("sentence_good", "sentence_bad") if not _is_sentence(entry.get(key))]
            if bad:
                file_problems.append(_pair_problem(path, place, f"no {' and no '.join(bad)} (a non-empty string)"))
            else:
                pairs.append(entry)
        problems += sorted(file_problems, key=lambda p: p.line or 0)
        read.append(PairFile(path, pairs))
    if problems:
        raise data_error(problems)
    return read


def _pair_problem(path: str, place: str, what: str) -> DataProblem:
    """A problem of one pair where scan_sample_file placed it: `name:LINE` in JSONL, `name #INDEX` in a list."""
    line = re.fullmatch(r".*:(\d+)", place)
    if line:
        return DataProblem(path, what, line=int(line.group(1)))
    return DataProblem(path, f"{place}: {what}", whole=True)


def _is_sentence(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def group_of(pair: dict, file: PairFile, group_by: str | None) -> str:
    fields = (group_by,) if group_by else DEFAULT_GROUP_FIELDS
    return next((str(pair[f]) for f in fields if pair.get(f) not in (None, "")), file.name)


def lm_eval_task(file: PairFile, index: int) -> dict:
    """BLiMP's task definition (lm-eval's tasks/blimp template) over one local JSONL file."""
    return {
        "task": f"llava_minimal_pairs_{index}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": os.path.abspath(file.path)},
        "test_split": "train",  # the `json` loader names a file's rows "train"
        "output_type": "multiple_choice",
        "doc_to_text": "",
        "doc_to_target": 0,
        "doc_to_choice": "{{[sentence_good, sentence_bad]}}",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


def import_lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise UserError(
            f"scoring minimal pairs needs lm-evaluation-harness: pip install 'lm-eval>=0.4.9,<0.5' ({e})"
        ) from None
    return lm_eval, HFLM, TaskManager


def score_model(model, tokenizer, files: list[PairFile], group_by: str | None = None, batch_size: int = 32) -> dict:
    """Accuracy of a stock causal LM (in memory) on the pairs, through lm-eval; see the module docstring."""
    lm_eval, HFLM, TaskManager = import_lm_eval()
    tasks = [lm_eval_task(f, i) for i, f in enumerate(files)]
    quiet = logging.getLogger("lm-eval"), logging.getLogger("lm_eval")
    levels = [q.level for q in quiet]
    for q in quiet:  # lm-eval tells at INFO and WARNING what it does with a model given in memory
        q.setLevel(logging.ERROR)
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            task_manager=TaskManager(include_defaults=False),
            log_samples=True,
            bootstrap_iters=0,
        )
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)

    per_pair, per_file = [], {}
    for file, task in zip(files, tasks):
        logged = sorted(out["samples"][task["task"]], key=lambda s: s["doc_id"])
        for sample in logged:
            (good, _), (bad, _) = sample["filtered_resps"]
            per_pair.append(
                {
                    "file": file.name,
                    "line": sample["doc_id"] + 1,
                    "group": group_of(sample["doc"], file, group_by),
                    "logprob_good": float(good),
                    "logprob_bad": float(bad),
                    "right": bool(sample["acc"]),
                }
            )
        per_file[file.name] = {"accuracy": float(out["results"][task["task"]]["acc,none"]), "pairs": len(logged)}
    groups = {}
    for pair in per_pair:
        groups.setdefault(pair["group"], []).append(pair["right"])
    return {
        "accuracy": sum(p["right"] for p in per_pair) / len(per_pair),
        "pairs": len(per_pair),
        "chance": CHANCE,
        "files": per_file,
        "groups": {g: {"accuracy": sum(r) / len(r), "pairs": len(r)} for g, r in sorted(groups.items())},
        "per_pair": per_pair,
    }


def stock_language_model(model_path: str, model_base: str | None = None, device: str = "cpu"):
    """(tokenizer, stock causal LM) of a llava checkpoint or a plain language model folder."""
    from ..model.builder import load_pretrained_model
    from ..serve.checks import check_model
    from .export_lm import to_stock

    check_model(model_path, model_base)
    tokenizer, model, _, _ = load_pretrained_model(model_path, model_base, device="cpu")
    stock = to_stock(model)
    del model
    return tokenizer, stock.to(device)


def evaluate(model_path, pair_paths, model_base=None, group_by=None, device="cpu", batch_size=32) -> dict:
    files = read_pair_files(pair_paths)  # before the model loads
    tokenizer, stock = stock_language_model(model_path, model_base, device)
    return {"model_path": model_path, **score_model(stock, tokenizer, files, group_by, batch_size)}


def format_table(result: dict) -> str:
    rows = [("all pairs", result["accuracy"], result["pairs"])]
    rows += [(f"  {name}", g["accuracy"], g["pairs"]) for name, g in result["groups"].items()]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'minimal pairs':<{width}}  accuracy  pairs  95% interval (chance {result['chance']:.0%})"]
    for name, accuracy, pairs in rows:
        margin = 1.96 * math.sqrt(accuracy * (1 - accuracy) / pairs)
        lines.append(f"{name:<{width}}  {accuracy:8.1%}  {pairs:5d}  ±{margin:.1%}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = ArgumentParser(prog="python -m llava.eval.minimal_pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True, help="a llava checkpoint or a plain language model folder")
    parser.add_argument("--model-base", help="the language model of an adapter-only run given as --model-path")
    parser.add_argument("--pairs", nargs="+", required=True, metavar="FILE_OR_DIR", help="BLiMP-form JSONL")
    parser.add_argument("--group-by", help="the field that groups pairs (default: group, else UID, else the file)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    result = evaluate(args.model_path, args.pairs, args.model_base, args.group_by, args.device, args.batch_size)
    print(format_table(result))
    return result


# The command line: an expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status.
cli = entry_point(main)

if __name__ == "__main__":
    cli()
