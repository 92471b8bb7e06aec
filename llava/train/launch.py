"""`python -m llava.train.launch ARGS`: torchrun (`python -m torch.distributed.run`, with the same ARGS),
whose failure ends in one line.

When a rank fails, torchrun ends the log with a traceback of its own and a table of the failed ranks,
some thirty lines after the rank's own `error:` line. Here the same facts are one line, about the rank
that failed first:

    error: rank 1 (node2) was killed by signal 9 (SIGKILL; the kernel's out-of-memory killer sends it too)
    error: rank 0 (node1) failed: ValueError: ... (its traceback is above)

A rank that failed as expected (a bad file, a full disk) has said so in its own `error:` line and
exited non-zero: nothing is added to it.

The exit status is torchrun's (1); a launcher told to stop by a signal passes it on to the ranks, as
torchrun does, and exits with 128 + the signal's number, without torchrun's traceback (the ranks' own
lines say what they saved). LLAVA_DEBUG=1 keeps torchrun's own report.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.run import parse_args, run

from ..errors import debugging, say_error


def describe_failure(error: ChildFailedError) -> str | None:
    """One line: the rank that failed first, its node, and how it ended; None where the rank ended with
    its own line (an expected failure exits non-zero without an exception)."""
    rank, failure = min(error.failures.items(), key=_cause_first)
    if failure.exitcode > 0 and not isinstance(failure.message, dict):
        return None  # an expected failure: the rank said it in its own line, and exited non-zero
    return f"rank {rank} ({socket.gethostname()}) {_how_it_ended(failure)}"


def _cause_first(item: tuple[int, ProcessFailure]) -> tuple:
    """Orders failures cause first. torchrun's own pick (the earliest timestamp) is unreliable: a failure
    without an error file is stamped in whole seconds when torchrun notices it, so a rank killed outright
    and another that then lost its connection, or that torchrun stopped with SIGTERM, often tie. A death
    by any other signal cannot be a consequence of another rank's; an exception may be (a connection reset
    by the dead peer), an exit status more often (a rank that saved and stopped when torchrun passed a
    signal on), and SIGTERM is torchrun stopping the rest."""
    rank, failure = item
    if failure.exitcode < 0:
        kind = 3 if -failure.exitcode == signal.SIGTERM else 0
    else:
        kind = 1 if isinstance(failure.message, dict) else 2
    return kind, failure.timestamp, rank


def _how_it_ended(failure: ProcessFailure) -> str:
    if failure.exitcode < 0:
        number = -failure.exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        hint = "; the kernel's out-of-memory killer sends it too" if number == signal.SIGKILL else ""
        return f"was killed by signal {number} ({name}{hint})"
    message = " ".join(str(failure.message.get("message", "")).split())  # written by torch's `record`
    return f"failed: {message} (its traceback is above)"


class _WithoutFailureRecord(logging.Filter):
    """torchrun's agent logs each failed rank as an ERROR record before raising; the line this module
    prints says the same, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("failed (exitcode:")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if debugging():
        run(args)
        return 0
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_WithoutFailureRecord())
    try:
        run(args)
    except ChildFailedError as e:
        line = describe_failure(e)
        if line:
            say_error(line)
        return 1
    except SignalException as e:
        # Told to stop (SIGTERM, SIGUSR1, ...): torchrun passed the signal on and gave the ranks
        # STOP_TIMEOUT to save; their own lines say what was saved. A stopped run is not a finished one.
        return 128 + int(e.sigval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
