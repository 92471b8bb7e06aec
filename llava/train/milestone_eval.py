"""Milestone checkpoints evaluated beside training (`--eval_milestones ARGS`).

Each time a milestone checkpoint is complete (and once more for the final model), global rank 0 starts
`python -m llava.eval.curves OUTPUT_DIR --background ARGS` and goes on training. The evaluator is
detached: a session of its own, so that the signals the launcher and torchrun send the ranks' process
groups (a stop, the end of the run) do not reach it; its output is appended to OUTPUT_DIR/curves.log;
nobody waits for it. Evaluators started while another one runs wait for its lock on the run
(curves.lock), then evaluate only what is still missing, one checkpoint at a time, at the lowest CPU
priority and on one CPU thread; at most two are alive (MAX_ALIVE).

Under SLURM the processes of a job step end with it, evaluators included: train_italian_video.sh runs the
same command in the foreground after the training (`python -m llava.train.milestone_eval OUTPUT_DIR ARGS`,
below), which waits for the lock and evaluates whatever is left, then prints the table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
import time

from ..errors import UsageError

logger = logging.getLogger(__name__)

CURVES_LOG = "curves.log"
LOWEST_PRIORITY = 19  # nice
# Evaluators alive at once: one evaluating, one waiting for its turn. A save made while both are alive
# needs no third: the waiting one takes the lock after it and evaluates everything still missing. (Each
# waiting evaluator holds torch and a model's worth of memory; milestones that come faster than they are
# evaluated would otherwise pile them up.) In the moment between the older one releasing the lock and
# exiting, the younger may already have looked for the last time: such a save waits for the next save's
# evaluator, or for the evaluation after the training.
MAX_ALIVE = 2
CURVES_MODULE = "llava.eval.curves"
# The variables that make a process a rank of the training (torchrun's, and accelerate's, which the
# Trainer sets): an evaluator that inherited them would try to join the training's process group.
RANK_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_NAME",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)
RANK_VARIABLE_PREFIXES = ("TORCHELASTIC_", "ACCELERATE_")


def split_arguments(arguments: str) -> list[str]:
    """The curves arguments of `--eval_milestones`, split as a shell would (quotes keep a path with
    spaces whole)."""
    try:
        return shlex.split(arguments)
    except ValueError as e:
        raise UsageError(f"--eval_milestones {arguments!r}: {e} (quote a path with spaces whole)") from None


def curves_command(output_dir: str, arguments: str, background: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        CURVES_MODULE,
        output_dir,
        *(["--background"] if background else []),
        *split_arguments(arguments),
    ]


def evaluator_environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name not in RANK_VARIABLES and not name.startswith(RANK_VARIABLE_PREFIXES)
    }


class BackgroundEvaluators:
    """Starts detached evaluators of a run's checkpoints (`start`, once per save); call on global rank 0."""

    def __init__(self, output_dir: str, arguments: str):
        self.output_dir = output_dir
        self.command = curves_command(output_dir, arguments, background=True)
        self.running: list[subprocess.Popen] = []
        self.started = 0

    def start(self, what: str) -> subprocess.Popen | None:
        """An evaluator for `what` (a save just completed, named in curves.log). None where none was
        started: MAX_ALIVE evaluators are alive (the younger one, waiting for its turn, takes the lock
        after this save and evaluates it), or starting one failed (a warning; the training goes on, and
        the evaluation after the training catches up)."""
        self.reap()
        log_path = os.path.join(self.output_dir, CURVES_LOG)
        stamp = f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {what} saved"
        try:
            with open(log_path, "a", encoding="utf-8") as log:
                if len(self.running) >= MAX_ALIVE:
                    log.write(f"{stamp}: left to the evaluator waiting for its turn (pid {self.running[-1].pid})\n")
                    return None
                log.write(f"{stamp}: {shlex.join(self.command)}\n")
                log.flush()
                process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=evaluator_environment(),
                    start_new_session=True,
                )
        except OSError as e:
            logger.warning("could not start the evaluation of %s in the background: %s", what, e)
            return None
        lower_priority(process.pid)
        if not self.started:
            logger.info(
                "each milestone is evaluated in the background as it is saved (%s); their output: %s",
                shlex.join(self.command),
                log_path,
            )
        self.started += 1
        self.running.append(process)
        return process

    def reap(self) -> None:
        """Forgets the evaluators that ended (polling collects their exit status: no zombies pile up)."""
        self.running = [process for process in self.running if process.poll() is None]


def lower_priority(pid: int) -> None:
    """The lowest CPU priority for a process of its own session, from its first instant (its imports
    alone take seconds of CPU; it lowers its own priority with --background only later). Where the kernel
    groups processes by session for scheduling (autogroup, the default of many distributions), a nice
    value counts only inside its group, and a new session is a group of its own as strong as the
    training's: the group's nice is lowered too."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, LOWEST_PRIORITY)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as group:
        group.write(f"{LOWEST_PRIORITY}\n")


USAGE = "usage: python -m llava.train.milestone_eval OUTPUT_DIR 'CURVES ARGUMENTS'"


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m llava.eval.curves OUTPUT_DIR ARGS` in the foreground (replacing this process), with
    ARGS (one argument) split as the training splits its --eval_milestones value. train_italian_video.sh
    runs it after a finished training."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{' '.join(main.__doc__.split())}")
        return 0
    if len(argv) != 2:
        raise UsageError(f"{USAGE} (got {len(argv)} arguments)")
    command = curves_command(argv[0], argv[1], background=False)
    os.execv(command[0], command)
    return 0  # not reached: the evaluator replaced this process


if __name__ == "__main__":
    from ..errors import entry_point

    raise SystemExit(entry_point(main)())
