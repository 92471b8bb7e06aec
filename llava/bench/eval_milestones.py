"""What evaluating milestones beside training costs the training: `python -m llava.bench --eval-milestones`.

Trains the `make demo` model (GPT-2 4x128, a 2-layer DINOv2 on 56-pixel crops, the demo's synthetic
clips and hyperparameters, one process) for a fixed number of optimizer steps with a word milestone every
MILESTONE_WORDS words, once without and once with `--eval_milestones` (the demo's minimal pairs and the
captions of a small validation set, as `make demo` evaluates them), and reports the training's optimizer
steps per second of each (the milestone saves count in both), their ratio, and how long after the end of
the training the last evaluation finished. The two kinds of run alternate, --repeats times each (after a
short training that is not measured: the first in a process pays one-time costs), so that a slow spell of
a shared machine weighs on both; medians are reported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import statistics
import time
from pathlib import Path

import torch

from ..errors import UserError

MILESTONE_WORDS = 300  # about every 5 steps of the demo's batch of 8 captions
STEPS = 150
WARM_UP_STEPS = 10
NUM_TRAIN, NUM_VAL = 96, 8  # clips; the validation clips are the captions the evaluators score
PAIRS_PER_PARADIGM = 10
EVALUATION_TIMEOUT_S = 1800


def build_assets(folder: Path) -> dict:
    """The demo's data, tokenizer and models, and its minimal pairs."""
    from ..demo.grammar import write_minimal_pairs
    from ..demo.run import Preset
    from ..demo.run import build_assets as build_demo_assets

    shutil.rmtree(folder, ignore_errors=True)
    assets = build_demo_assets(folder, Preset(num_train=NUM_TRAIN, num_val=NUM_VAL, epochs=1))
    assets["pairs"] = write_minimal_pairs(folder / "data" / "minimal_pairs.jsonl", PAIRS_PER_PARADIGM)
    return assets


def train_argv(assets: dict, output_dir: Path, steps: int) -> list[str]:
    """The demo's training (llava.demo.run.training_flags) in one process, saving only its milestones."""
    from ..demo.run import Preset, training_flags
    from ..train.command_line import tokens

    # Milestones up to well beyond the run's words (8 captions of about 8 words a step): the run crosses
    # one every MILESTONE_WORDS words to its end.
    milestones = ",".join(str(MILESTONE_WORDS * i) for i in range(1, steps * 100 // MILESTONE_WORDS))
    run = {
        "max_steps": steps,
        "save_strategy": "no",
        "save_every_minutes": 0,
        "word_milestones": milestones,
        "disable_tqdm": True,
        "report_to": "none",
    }
    return tokens(training_flags(assets, Preset(num_train=NUM_TRAIN, num_val=NUM_VAL, epochs=1), output_dir) | run)


def curves_arguments(assets: dict, device: torch.device) -> str:
    pairs, val, videos = (shlex.quote(str(assets[key])) for key in ("pairs", "val", "video_folder"))
    return f"--minimal-pairs {pairs} --captions {val} --video-folder {videos} --device {device.type} --no-plot"


def one_run(assets: dict, output_dir: Path, steps: int, evaluation: str | None) -> dict:
    """One training; with `evaluation` (the --eval_milestones value), waits for its evaluators too."""
    from ..eval.curves import read_rows
    from ..train import train

    shutil.rmtree(output_dir, ignore_errors=True)
    argv = train_argv(assets, output_dir, steps) + (["--eval_milestones", evaluation] if evaluation else [])
    trainer = train.main(argv)
    ended = time.perf_counter()
    runtime = next(e["train_runtime"] for e in reversed(trainer.state.log_history) if "train_runtime" in e)
    result = {
        "steps_per_s": trainer.state.global_step / runtime,
        "milestones": len(list(output_dir.glob("checkpoint-words-*"))),
    }
    if evaluation:
        evaluators = trainer.evaluators
        for process in evaluators.running:
            if process.wait(timeout=EVALUATION_TIMEOUT_S) != 0:
                log = (output_dir / "curves.log").read_text()[-3000:]
                raise UserError(f"an evaluator failed (status {process.returncode}); curves.log ends:\n{log}")
        evaluated = {row["checkpoint"] for row in read_rows(str(output_dir))}
        result.update(
            evaluators=evaluators.started,
            evaluated=len(evaluated),
            finished_after_s=time.perf_counter() - ended,
        )
    return result


@contextlib.contextmanager
def quiet(log_path: Path):
    """What a training prints (its log lines, progress bars of the saves) goes to `log_path`."""
    with (
        open(log_path, "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        yield


def run(workdir: Path, device: torch.device, repeats: int, steps: int = STEPS) -> dict:
    folder = workdir / "eval_milestones"
    print(f"[eval milestones] building the demo's clips, models and minimal pairs in {folder}", flush=True)
    assets = build_assets(folder / "assets")
    evaluation = curves_arguments(assets, device)
    pairs = len(Path(assets["pairs"]).read_text(encoding="utf-8").splitlines())
    print(
        f"[eval milestones] the demo model, {steps} optimizer steps of 8 clips (one process, "
        f"{torch.get_num_threads()} torch threads), a milestone every {MILESTONE_WORDS} words; evaluated: "
        f"{pairs} minimal pairs and {NUM_VAL} validation captions (--eval_milestones '{evaluation}')",
        flush=True,
    )
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    training_log = folder / "training.log"
    training_log.write_text("")
    print(f"[eval milestones] the trainings' own output: {training_log}", flush=True)
    logging.disable(logging.INFO)  # the training's own log lines
    try:
        with quiet(training_log):  # the first training in a process pays one-time costs: not measured
            one_run(assets, folder / "run-warm-up", WARM_UP_STEPS, None)
        for i in range(repeats):
            for kind in runs:
                load = os.getloadavg()[0]
                with quiet(training_log):
                    result = one_run(assets, folder / f"run-{kind}", steps, evaluation if kind == "with" else None)
                result["load_before"], result["load_after"] = load, os.getloadavg()[0]
                runs[kind].append(result)
                extra = (
                    f"; {result['evaluators']} evaluators started, {result['evaluated']} checkpoints evaluated, "
                    f"the last {result['finished_after_s']:.0f} s after the training ended"
                    if kind == "with"
                    else ""
                )
                print(
                    f"  run {i + 1} {kind:>7} --eval_milestones: {result['steps_per_s']:.2f} steps/s, "
                    f"{result['milestones']} milestones{extra} (load average {load:.1f} before, "
                    f"{result['load_after']:.1f} after)",
                    flush=True,
                )
    finally:
        logging.disable(logging.NOTSET)
    without = statistics.median(r["steps_per_s"] for r in runs["without"])
    with_eval = statistics.median(r["steps_per_s"] for r in runs["with"])
    lag = statistics.median(r["finished_after_s"] for r in runs["with"])
    summary = {
        "steps_per_s_without": without,
        "steps_per_s_with": with_eval,
        "ratio": with_eval / without,
        "evaluation_finished_after_s": lag,
        "runs": runs,
    }
    slower = 100 * (1 - with_eval / without)
    print(
        f"steps/s without --eval_milestones: {without:.2f}; with: {with_eval:.2f}; ratio {with_eval / without:.2f} "
        f"(training {abs(slower):.0f}% {'slower' if slower >= 0 else 'faster'}); the evaluations done "
        f"{lag:.0f} s after the training (medians of {repeats})",
        flush=True,
    )
    for kind in ("warm-up", *runs):
        shutil.rmtree(folder / f"run-{kind}", ignore_errors=True)
    return summary
