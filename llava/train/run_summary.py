"""The last line of a training log: how the run ended and why, the steps done, the samples skipped, and
where its model is (the final one, or the newest checkpoint to resume from). Written by rank 0 once the
trainer exists; a failure before that (a wrong flag, a bad data file) has only its `error:` line.

  run finished: 120 steps, 3 samples skipped (OUT/skipped_samples.jsonl), final model in OUT
  run stopped by SIGUSR1: 40 of 120 steps, no samples skipped, checkpoint OUT/checkpoint-40 saved (the same command resumes from it)
  run failed (MESSAGE): 12 of 120 steps, no samples skipped, newest checkpoint OUT/checkpoint-10 (the same command resumes from it)
"""

from __future__ import annotations

import os

from ..errors import one_line
from . import checkpoints
from .preemption import TrainingInterrupted
from .skipped_samples import SkipLimitExceeded

RESUMES = "the same command resumes from it"


def summary_line(trainer, outcome: BaseException | None = None) -> str:
    """The summary of a run that ended with `outcome` (None: it finished)."""
    args, state = trainer.args, trainer.state
    output_dir = os.path.abspath(args.output_dir)
    if outcome is None:
        head = f"run finished{_words_reached(trainer)}: {_steps(state.global_step)}"
        where = f"final model in {output_dir}"
    else:
        done = f"{state.global_step} of {_steps(state.max_steps)}" if state.max_steps else _steps(state.global_step)
        head = f"run {_ending(outcome, trainer)}: {done}"
        where = _resume_point(outcome, output_dir)
    return f"{head}, {_skipped(trainer)}, {where}"


def _steps(count: int) -> str:
    return f"{count} step{'' if count == 1 else 's'}"


def _words_reached(trainer) -> str:
    max_words = getattr(trainer.args, "max_words", None)
    seen = getattr(trainer, "words_seen", 0)
    if max_words is not None and seen >= max_words:
        return f" (--max_words {max_words} reached: {seen} words trained)"
    return ""


def _ending(outcome: BaseException, trainer) -> str:
    if isinstance(outcome, TrainingInterrupted):
        return f"stopped by {outcome.signal_name}"
    if isinstance(outcome, SkipLimitExceeded):
        limit = trainer.skip_tracker.max_fraction
        return f"stopped (more samples could not be read than --max_skip_fraction {limit:g} allows)"
    if isinstance(outcome, KeyboardInterrupt):
        return "stopped (interrupted)"
    message = one_line(outcome)
    if message is None:  # a bug: its traceback follows this line
        return f"failed ({type(outcome).__name__}: {' '.join(str(outcome).split())}; a bug, its traceback follows)"
    return f"failed ({message})"


def _resume_point(outcome: BaseException, output_dir: str) -> str:
    if isinstance(outcome, TrainingInterrupted) and outcome.checkpoint:
        return f"checkpoint {os.path.abspath(outcome.checkpoint)} saved ({RESUMES})"
    newest = checkpoints.newest_marked_checkpoint(output_dir)
    if newest is None:
        return "no checkpoint saved (the same command starts from the beginning)"
    return f"newest checkpoint {newest} ({RESUMES})"


def _skipped(trainer) -> str:
    tracker = trainer.skip_tracker
    count = tracker.count if tracker is not None else 0
    if not count:
        return "no samples skipped"
    return f"{count} sample{'s' if count != 1 else ''} skipped ({os.path.abspath(tracker.path)})"
