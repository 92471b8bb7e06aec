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
below), which evaluates whatever is left, then prints the table. It stops the background evaluators that
are still there first: at the lowest priority, they would keep it waiting for their lock as long as other
work keeps the CPUs busy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
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


def background_evaluators(output_dir: str) -> list[int]:
    """The processes of this user that evaluate `output_dir` in the background (`python -m llava.eval.curves
    OUTPUT_DIR --background ...`, whoever started them), found in /proc."""
    target = os.path.realpath(output_dir)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != os.getuid():
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [token.decode(errors="replace") for token in f.read().split(b"\0")]
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        module = next((i for i in range(1, len(argv) - 1) if argv[i - 1 : i + 1] == ["-m", CURVES_MODULE]), None)
        if module is None or "--background" not in argv[module + 2 :]:
            continue
        if os.path.realpath(os.path.join(cwd, argv[module + 1])) == target:
            found.append(int(entry))
    return found


def stop_background_evaluators(output_dir: str, timeout_s: float = 30.0) -> list[int]:
    """Stops the background evaluators of `output_dir` (SIGTERM; SIGKILL after `timeout_s`) and returns
    their pids. Once the training is over they have nothing to yield to, but they keep the lowest
    priority, which a user cannot raise again: the evaluator waiting for their lock would wait as long as
    any other work keeps the CPUs busy. The rows they wrote are kept; a checkpoint they were evaluating
    is evaluated again."""
    pids = background_evaluators(output_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids


def _alive(pid: int) -> bool:
    """Running (not ended, nor a zombie that its parent has yet to collect)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


USAGE = "usage: python -m llava.train.milestone_eval OUTPUT_DIR 'CURVES ARGUMENTS'"


def main(argv: list[str] | None = None) -> int:
    """Runs `python -m llava.eval.curves OUTPUT_DIR ARGS` in the foreground (replacing this process), with
    ARGS (one argument) split as the training splits its --eval_milestones value, after stopping the
    run's background evaluators (see stop_background_evaluators). train_italian_video.sh runs it after a
    finished training."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{' '.join(main.__doc__.split())}")
        return 0
    if len(argv) != 2:
        raise UsageError(f"{USAGE} (got {len(argv)} arguments)")
    command = curves_command(argv[0], argv[1], background=False)
    stopped = stop_background_evaluators(argv[0])
    if stopped:
        print(
            f"stopped {len(stopped)} background evaluator(s) of {argv[0]} (pid {', '.join(map(str, stopped))}): "
            "the training is over, the evaluation goes on here at normal priority",
            file=sys.stderr,
            flush=True,
        )
    os.execv(command[0], command)
    return 0  # not reached: the evaluator replaced this process


if __name__ == "__main__":
    from ..errors import entry_point

    raise SystemExit(entry_point(main)())
