"""How a training run ends on every rank: which rank says a failure (and when the others wait for it),
the exit status, the summary line, and leaving without the teardown that aborts distributed runs.

A run's failure is either the same on every rank (flags, paths, data, the model folder: found before the
trainer exists; the skip limit: decided by every rank together), which rank 0 says, or one rank's own
(a failure during training), which that rank says. Bugs keep their traceback (LLAVA_DEBUG=1: every
failure does).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from .. import errors
from . import preemption
from .run_summary import summary_line
from .skipped_samples import SkipLimitExceeded

logger = logging.getLogger("llava.train")


class Run:
    """One training run as the exit policy sees it: the trainer, once built (before that, a failure is the
    same on every rank and there is no run to summarize)."""

    def __init__(self):
        self.trainer = None


def log_summary(trainer, outcome: BaseException | None = None) -> None:
    if trainer.is_world_process_zero():
        logger.info("%s", summary_line(trainer, outcome))


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


# How long a rank other than 0 waits, after a failure that every rank should share, for rank 0 to say it
# and end the job (the launcher then stops this rank) before it says it itself.
RANK_ZERO_GRACE_S = 30.0


def report_failure(exc: BaseException, run: Run) -> int:
    """Says why the run ended (the `error:` line, then the summary) and returns the exit status; a bug
    (or anything, with LLAVA_DEBUG=1) is re-raised after the summary, to end in its traceback.

    Who speaks: a failure before the trainer exists (flags, paths, data, the model folder) and the skip
    limit (decided on every rank together) are the same on every rank, so rank 0 says it. The other
    ranks wait: an early exit of theirs would make the launcher stop rank 0 before it has spoken. Where
    rank 0 does not end the job within RANK_ZERO_GRACE_S (it did not fail: a file missing on one node
    only), the rank says it itself, as `rank N: ...`. A failure during training is one rank's own: that
    rank prints it, as `rank N: ...` where there are several."""
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    if isinstance(exc, preemption.TrainingInterrupted):  # saved, and said so (rank 0, one line)
        log_summary(run.trainer, exc)
        return preemption.EXIT_INTERRUPTED
    expected = errors.one_line(exc) is not None or isinstance(exc, KeyboardInterrupt)
    if not expected or errors.debugging():
        if run.trainer is not None:
            log_summary(run.trainer, exc)
        raise exc
    same_everywhere = run.trainer is None or isinstance(exc, SkipLimitExceeded)
    if same_everywhere and rank != 0 and not isinstance(exc, KeyboardInterrupt):
        time.sleep(RANK_ZERO_GRACE_S)
    prefix = f"rank {rank}: " if world > 1 and (rank != 0 or not same_everywhere) else ""
    if isinstance(exc, KeyboardInterrupt):
        errors.say_error(f"{prefix}interrupted")
    else:
        errors.report(exc, prefix)
    if run.trainer is not None:
        log_summary(run.trainer, exc)
    return 130 if isinstance(exc, KeyboardInterrupt) else errors.exit_code(exc)


def leave(status: int, distributed: bool) -> None:
    """Ends the process with `status`. A rank of a distributed run sometimes aborts while the interpreter
    tears down DeepSpeed's and gloo's native threads ("terminate called without an active exception"),
    after everything is saved or said, and the launcher then reports a finished run as failed, or adds a
    SIGABRT line to a failure that was already said (seen after the skip limit). Past this point there is
    nothing left to do: a distributed run flushes and leaves without the teardown."""
    if distributed:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
