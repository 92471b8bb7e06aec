"""BabyLM learning curves: every milestone checkpoint of a run evaluated, and plotted against words seen.

    python -m llava.eval.curves OUTPUT_DIR [--minimal-pairs FILE_OR_DIR ...]
                                [--babylm TASK=DATA_PATH[,IMAGES_PATH,SPLIT] ...]
                                [--captions VAL.json --video-folder DIR] [--device D]

evaluates each word-milestone checkpoint of a training run (`OUTPUT_DIR/checkpoint-words-*`, saved with
`--word_milestones` / `--babylm_word_milestones`) and the run's final model (OUTPUT_DIR itself) that has no
result yet, then writes

- `OUTPUT_DIR/curves.jsonl`: one row per checkpoint and measure (`checkpoint`, `words`, `suite`,
  `measure`, `group`, `value`, `chance`, `n`, `source`, `evaluated`), appended as each checkpoint is done, so a stopped
  evaluation resumes where it stopped and a finished checkpoint is never evaluated twice;
- `OUTPUT_DIR/curves.png`: each measure against words seen (logarithmic axis), chance levels dashed;
- a table on stdout.

Measures:
- grammar (`--minimal-pairs`): accuracy on BLiMP-form minimal pairs, overall and per group, scored by
  lm-eval on the checkpoint's language model (llava.eval.minimal_pairs, lm-eval's convention); chance 50%.
- BabyLM tasks (`--babylm`): each task's average as the 2025 BabyLM pipeline computes it
  (llava.eval.babylm zero_shot: blimp, ewok, entity_tracking, wug_adj, wug_past, comps; vqa and
  winoground with their pictures), one measure per data folder (`babylm:TASK:FOLDER`), in the pipeline's
  units (percent; Spearman's rho for wug); `reading=CSV` the reading task's two scores and `devbench=DIR`
  DevBench's three (llava.eval.babylm reading, devbench; see babylm/milestones.py). The pipeline's own result files are written too, under
  OUTPUT_DIR/babylm_results/<run>/<revision>/zero_shot/causal/TASK/FOLDER, revisions named as
  `python -m llava.eval.babylm export` names them (chck_1M ... chck_1000M, main), so that its
  collate_preds reads them.
- grounding (`--captions`): caption loss (nats per token), the grounding gap (loss with shuffled clips
  minus loss with the true clips; 0 for a model that ignores the clip) and CIDEr-D of greedy captions
  (llava.eval.captions).

Training starts this command by itself for each new milestone with `--eval_milestones "ARGS"` (ARGS: the
arguments after OUTPUT_DIR), in the background: `--background` lowers its priority and uses one CPU
thread. Evaluators of one run take turns (a lock file, `curves.lock`): a second one waits, then evaluates
only what is still missing. `--checkpoint NAME_OR_INDEX` evaluates one checkpoint without waiting for
the others: a SLURM job array evaluates a run with one task per checkpoint (evaluate_milestones.sh), and
a last call without it draws the plot.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ArgumentParser, InputError, MissingInputFile, UsageError, check_input_folder, entry_point, saving
from .babylm.milestones import babylm_rows, babylm_tasks
from .curve_report import FINAL, format_table, measure_of, plot

logger = logging.getLogger("llava.eval.curves")

RESULTS_FILE = "curves.jsonl"
PLOT_FILE = "curves.png"
LOCK_FILE = "curves.lock"
APPEND_LOCK_FILE = "curves.append.lock"
MILESTONE_PREFIX = "checkpoint-words-"
WORD_COUNT_FILE = "word_count.json"  # written by training beside each milestone's and the final model's weights


@dataclass(frozen=True)
class Checkpoint:
    name: str  # checkpoint-words-1M, or "final"
    path: str
    words: int


# ------------------------------------------------------------------------------------------ arguments
def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m llava.eval.curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="a training run's --output_dir")
    parser.add_argument(
        "--minimal-pairs", nargs="+", metavar="FILE_OR_DIR", help="BLiMP-form JSONL files, or folders of them"
    )
    parser.add_argument("--group-by", help="the field that groups pairs (default: group, else UID, else the file)")
    parser.add_argument(
        "--babylm",
        nargs="+",
        metavar="TASK=DATA_PATH",
        help="BabyLM pipeline tasks: TASK=DATA_PATH (a folder of the task's .jsonl files); the image tasks "
        "TASK=DATA_PATH,IMAGES_PATH,SPLIT",
    )
    parser.add_argument(
        "--babylm-image-template", help="the pipeline's --image_template for the image tasks (append_image_token)"
    )
    parser.add_argument("--captions", metavar="VAL.json", help="LLaVA JSON/JSONL with reference captions")
    parser.add_argument("--video-folder")
    parser.add_argument("--image-folder")
    parser.add_argument("--device", help="default: cuda where there is a GPU, else cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--background", action="store_true", help="lowest CPU priority and one CPU thread (beside training)"
    )
    parser.add_argument("--no-plot", action="store_true", help="leave out curves.png")
    parser.add_argument(
        "--checkpoint",
        metavar="NAME_OR_INDEX",
        help="evaluate this checkpoint alone (its name, or its place in --list-checkpoints' order from 0): "
        "one task of a job array; several such evaluators of one run work at once",
    )
    parser.add_argument(
        "--list-checkpoints", action="store_true", help="print the run's finished checkpoints, one per line, and stop"
    )
    return parser


def check_inputs(args) -> tuple[list, list[dict] | None]:
    """Every input the arguments name, checked before any model loads (one line each). Returns the
    minimal-pair files read and the captions file's samples."""
    from ..serve.checks import check_data, has_visual_samples
    from .minimal_pairs import read_pair_files

    if not args.minimal_pairs and not args.captions and not args.babylm:
        raise UsageError(
            "nothing to evaluate: give --minimal-pairs FILE_OR_DIR, --babylm TASK=DATA_PATH and/or --captions VAL.json"
        )
    args.babylm_tasks = babylm_tasks(args)
    pair_files = read_pair_files(args.minimal_pairs) if args.minimal_pairs else []
    check_input_folder(args.video_folder, "--video-folder")
    check_input_folder(args.image_folder, "--image-folder")
    samples = check_data(args.captions, "--captions") if args.captions else None
    if samples and has_visual_samples(samples) and not (args.video_folder or args.image_folder):
        raise UsageError(
            f"--captions names clips or images: give --video-folder and/or --image-folder ({args.captions})"
        )
    return pair_files, samples


def check_arguments(output_dir: str, argv: list[str] | str) -> None:
    """The checks of a `--eval_milestones` value (the arguments after OUTPUT_DIR) before training starts."""
    argv = shlex.split(argv) if isinstance(argv, str) else list(argv)
    check_inputs(build_parser().parse_args([output_dir, *argv]))


# ------------------------------------------------------------------------------------------ the run's checkpoints
def read_words(folder: str) -> int | None:
    """The words seen by the model in `folder`; None while its save is not finished (no readable count yet)."""
    try:
        with open(os.path.join(folder, WORD_COUNT_FILE)) as f:
            return int(json.load(f)["words"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_checkpoints(output_dir: str) -> list[Checkpoint]:
    """The run's finished milestone checkpoints and its final model, by words seen."""
    found = []
    for entry in sorted(Path(output_dir).glob(MILESTONE_PREFIX + "*")):
        words = read_words(str(entry))
        if entry.is_dir() and words is not None:
            found.append(Checkpoint(entry.name, str(entry), words))
    words = read_words(output_dir)
    if words is not None and os.path.isfile(os.path.join(output_dir, "config.json")):
        found.append(Checkpoint(FINAL, output_dir, words))
    return sorted(found, key=lambda c: (c.words, c.name == FINAL))


# ------------------------------------------------------------------------------------------ results file
def read_rows(output_dir: str) -> list[dict]:
    """The rows of curves.jsonl; a line cut short by a killed evaluator is left out (it is redone)."""
    path = os.path.join(output_dir, RESULTS_FILE)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning(
                    "%s:%d is not a whole row (an evaluation stopped while writing?): left out", path, number
                )
    return rows


def append_rows(output_dir: str, rows: list[dict]) -> None:
    """All rows of one checkpoint's suite in one write, synced: a stop leaves the suite whole or absent
    (or cut short, which read_rows leaves out)."""
    path = os.path.join(output_dir, RESULTS_FILE)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with appending(output_dir), saving(path, "the curve results", needed=len(text)):
        if not _ends_a_line(path):  # a write cut short: its half line must not swallow the first new row
            text = b"\n" + text
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)


def _ends_a_line(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except OSError:  # no file, or an empty one
        return True


def suite_done(rows: list[dict], checkpoint: Checkpoint, suite: str, source: str) -> bool:
    return any(
        r.get("checkpoint") == checkpoint.name
        and r.get("words") == checkpoint.words
        and r.get("suite") == suite
        and r.get("source") == source
        for r in rows
    )


@contextlib.contextmanager
def exclusive(output_dir: str):
    """One evaluator of a run at a time; the next one waits here (the lock goes with the process)."""
    with open(os.path.join(output_dir, LOCK_FILE), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.warning("another evaluator of %s is running: waiting for it to finish", output_dir)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def appending(output_dir: str):
    """One writer of curves.jsonl at a time, for as long as one append takes: evaluators of single
    checkpoints (a job array's tasks) run side by side, and an append is not atomic on every file system
    (NFS)."""
    with open(os.path.join(output_dir, APPEND_LOCK_FILE), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# ------------------------------------------------------------------------------------------ evaluating
def grammar_rows(model, tokenizer, files, group_by, batch_size) -> list[dict]:
    from .export_lm import to_stock
    from .minimal_pairs import score_model

    stock = to_stock(model).to(model.device)  # to_stock copies to the CPU
    result = score_model(stock, tokenizer, files, group_by, batch_size)
    rows = [{"measure": "grammar", "group": None, "value": result["accuracy"], "n": result["pairs"]}]
    rows += [
        {"measure": "grammar", "group": name, "value": g["accuracy"], "n": g["pairs"]}
        for name, g in result["groups"].items()
    ]
    return rows


def caption_rows(model, tokenizer, processor, args, samples) -> list[dict]:
    from .captions import score_model

    result = score_model(
        model,
        tokenizer,
        processor,
        args.captions,
        samples,
        args.video_folder,
        args.image_folder,
        batch_size=args.batch_size,
        progress=False,
    )
    n = result["samples"]
    return [
        {"measure": "caption_loss", "group": None, "value": result["loss"], "n": n},
        {"measure": "grounding_gap", "group": None, "value": result["grounding_gap"], "n": result["visual_samples"]},
        {"measure": "cider", "group": None, "value": result["cider"], "n": n},
    ]


def evaluate_checkpoint(checkpoint: Checkpoint, args, suites: dict) -> list[dict]:
    """Loads the checkpoint once and runs each suite still missing for it; each suite's rows are appended
    as soon as it is done."""
    import torch

    from ..model.builder import load_pretrained_model
    from ..serve.checks import check_model, require_vision

    config = check_model(checkpoint.path)
    if "captions" in suites:
        require_vision(config, checkpoint.path, "score the captions of --captions")
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint.path, device=args.device)
    written = []
    with torch.no_grad():
        for suite, source in suites.items():
            if suite == "grammar":
                rows = grammar_rows(model, tokenizer, args.pair_files, args.group_by, args.batch_size)
            elif suite == "babylm":
                rows = babylm_rows(model, tokenizer, checkpoint, args)
            else:
                rows = caption_rows(model, tokenizer, processor, args, args.caption_samples)
            when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            rows = [
                {
                    "checkpoint": checkpoint.name,
                    "words": checkpoint.words,
                    "suite": suite,
                    **row,
                    "chance": measure_of(row["measure"]).chance,
                    "source": source,
                    "evaluated": when,
                }
                for row in rows
            ]
            append_rows(args.output_dir, rows)
            written += rows
    return written


def sources(args) -> dict:
    """The suites asked for, each with what identifies its data (a changed file list is evaluated anew)."""
    wanted = {}
    if args.minimal_pairs:
        wanted["grammar"] = ",".join(os.path.abspath(f.path) for f in args.pair_files)
    if args.babylm:
        wanted["babylm"] = ";".join(
            f"{a.task}={os.path.abspath(a.data_path)},{a.images_path},{a.image_split},{a.image_template}"
            for a, _ in args.babylm_tasks
        )
    if args.captions:
        wanted["captions"] = os.path.abspath(args.captions)
    return wanted


def chosen_checkpoint(args) -> Checkpoint:
    """The checkpoint --checkpoint names (a name, or an index into the run's checkpoints); one line if none."""
    found = run_checkpoints(args.output_dir)
    names = [c.name for c in found]
    if args.checkpoint in names:
        return found[names.index(args.checkpoint)]
    if args.checkpoint.isdigit() and int(args.checkpoint) < len(found):
        return found[int(args.checkpoint)]
    raise InputError(
        f"--checkpoint {args.checkpoint}: not one of the run's {len(found)} finished checkpoints "
        f"(0-{len(found) - 1} or {', '.join(names)}) ({args.output_dir})"
    )


def evaluate_one(args) -> list[str]:
    """Evaluates what is missing of the --checkpoint alone (no run-wide lock: a job array's tasks run at once)."""
    checkpoint = chosen_checkpoint(args)
    rows = read_rows(args.output_dir)
    missing = {s: src for s, src in sources(args).items() if not suite_done(rows, checkpoint, s, src)}
    if not missing:
        return []
    logger.warning("evaluating %s (%s words seen): %s", checkpoint.name, f"{checkpoint.words:,}", ", ".join(missing))
    evaluate_checkpoint(checkpoint, args, missing)
    return [checkpoint.name]


def evaluate_run(args) -> list[str]:
    """Evaluates what is missing, oldest checkpoint first; returns the names of the checkpoints evaluated.
    Checkpoints saved while it runs are picked up too (training may be writing them)."""
    evaluated = []
    while True:
        rows = read_rows(args.output_dir)
        pending = [
            (checkpoint, missing)
            for checkpoint in run_checkpoints(args.output_dir)
            if (missing := {s: src for s, src in sources(args).items() if not suite_done(rows, checkpoint, s, src)})
        ]
        if not pending:
            return evaluated
        checkpoint, missing = pending[0]
        logger.warning(
            "evaluating %s (%s words seen): %s", checkpoint.name, f"{checkpoint.words:,}", ", ".join(missing)
        )
        evaluate_checkpoint(checkpoint, args, missing)
        evaluated.append(checkpoint.name)


# ------------------------------------------------------------------------------------------ command line
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not os.path.isdir(args.output_dir):
        raise MissingInputFile(
            f"OUTPUT_DIR: no such folder, expected a training run's --output_dir ({args.output_dir})"
        )
    if args.list_checkpoints:
        names = [c.name for c in run_checkpoints(args.output_dir)]
        print("\n".join(names), flush=True)
        return {"checkpoints": names}
    args.pair_files, args.caption_samples = check_inputs(args)
    if not run_checkpoints(args.output_dir):
        raise InputError(
            f"no milestone checkpoint ({MILESTONE_PREFIX}*) or final model with its {WORD_COUNT_FILE} in the "
            f"folder: train with --word_milestones or --babylm_word_milestones ({args.output_dir})"
        )

    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.background:
        os.nice(19)  # beside training: what is left of the CPU, never what training needs
        torch.set_num_threads(1)
    if args.checkpoint is not None:
        evaluated = evaluate_one(args)
        return {"evaluated": evaluated, "rows": read_rows(args.output_dir), "table": None, "plot": None}
    with exclusive(args.output_dir):
        evaluated = evaluate_run(args)
        rows = read_rows(args.output_dir)
        png = os.path.join(args.output_dir, PLOT_FILE)
        if not args.no_plot:
            plot(rows, png, f"learning curves of {os.path.basename(os.path.abspath(args.output_dir))}")
    table = format_table(rows)
    print(table, flush=True)
    return {"evaluated": evaluated, "rows": rows, "table": table, "plot": None if args.no_plot else png}


# The command line: an expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status.
cli = entry_point(main)

if __name__ == "__main__":
    cli()
