"""Stopping with a checkpoint when told to, and checkpoints bounded in time.

A run is told to stop by a signal: SIGUSR1 (SLURM's warning before the time limit, which the batch script
asks for, or a preemption notice: `scancel --signal=USR1`), SIGTERM (SLURM at the time limit or on
preemption, `kill`, torchrun passing one on) or SIGINT (Ctrl-C). While `StopSignals` is active these
signals only record that a stop was asked for; `StopAndIntervalCheckpoints` acts on it at the next
optimizer step boundary: every rank finishes its step, the Trainer saves one complete checkpoint (its own
model, optimizer, scheduler, RNG and data position, plus this project's words seen and completion marker:
LlavaTrainer._save_checkpoint), rank 0 writes `interrupted.json` beside the checkpoints and prints one line
saying where it saved, and `TrainingInterrupted` ends the run. The same command started again resumes
from that checkpoint; train_italian_video.sh reads `interrupted.json` to requeue its SLURM job.

A signal reaches the ranks at different moments (or only some of them: `kill` of one process), so no rank
acts on its own: at every step boundary the ranks all-reduce (max) a small vector (the signal seen, if any,
and whether rank 0's clock says the time-based checkpoint is due) and all take the same decision at the
same step. The reduction runs on a CPU (gloo) group: no GPU synchronization per step.

transformers' `--enable_jit_checkpoint` does the signal part per process (each rank saves when its own
flag is set, from inside the step), which can leave ranks in different collectives under DeepSpeed;
train.build_trainer turns it off in favour of this module.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from .. import errors
from .ranks import is_distributed

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
# Written by rank 0 beside the checkpoints when a run stops on a signal; read by train_italian_video.sh.
INTERRUPTED_FILE = "interrupted.json"
# sysexits' EX_TEMPFAIL: stopped before the end, try again (the same command resumes).
EXIT_INTERRUPTED = 75


class TrainingInterrupted(Exception):
    """A run stopped on a signal after saving `checkpoint` (None when it stopped before its first step
    and had no checkpoint to resume from)."""

    def __init__(self, signal_name: str, step: int, checkpoint: str | None):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        where = f"checkpoint {checkpoint} is complete" if checkpoint else "nothing to save yet"
        super().__init__(f"stopped by {signal_name} at step {step}: {where}")


class StopSignals:
    """While active (a `with` block, in the main thread), SIGTERM, SIGINT and SIGUSR1 only record that a
    stop was asked for (`received`: the first signal's number); the previous handlers come back on exit.
    Repeated signals are expected (SLURM signals every process of a step, torchrun passes them on again)
    and change nothing."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("not in the main thread: a signal cannot be caught and ends the run without a checkpoint")
            return self
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _record(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum


class WorkersIgnoreStopSignals:
    """A DataLoader worker_init_fn (picklable, for any start method) that makes the worker ignore the stop
    signals, then runs `then`. SLURM signals every process of a job step, DataLoader workers included,
    and torch's workers die of a SIGTERM their parent did not send: the rank would then crash before it
    could save. A worker still ends when its loader ends it, or when its rank is gone."""

    def __init__(self, then=None):
        self.then = then

    def __call__(self, worker_id: int) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if self.then is not None:
            self.then(worker_id)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopAndIntervalCheckpoints(TrainerCallback):
    """Acts on `stop` (a StopSignals) at optimizer step boundaries, and saves a checkpoint whenever
    `save_every_minutes` have passed since the last one (by rank 0's clock; off when None or 0 or with
    --save_strategy no). Every rank must have it: its decisions are collective."""

    def __init__(self, stop: StopSignals | None = None, save_every_minutes: float | None = None):
        self.stop = stop if stop is not None else StopSignals()
        self.interval = save_every_minutes * 60 if save_every_minutes else None
        self.group = None
        self.last_save = time.monotonic()
        self.stopping: str | None = None

    # ---------------------------------------------------------------------------------- decisions
    def _agree(self, args, state) -> tuple[int, bool]:
        """(the signal any rank has seen, 0 for none; whether rank 0 finds a time-based save due)."""
        due = bool(self.interval) and state.is_world_process_zero
        due = due and time.monotonic() - self.last_save >= self.interval
        flags = [self.stop.received or 0, int(due)]
        if is_distributed():
            tensor = torch.tensor(flags, dtype=torch.int64)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
            flags = tensor.tolist()
        return flags[0], bool(flags[1])

    def on_train_begin(self, args, state, control, **kwargs):
        if args.save_strategy == "no":
            self.interval = None
        if is_distributed() and "gloo" not in str(dist.get_backend()):
            # NCCL and the like reduce GPU tensors: a CPU group keeps the per-step check off the GPU stream.
            self.group = dist.new_group(backend="gloo")
        # accelerate wraps the DataLoader (DataLoaderShard.base_dataloader): the inner one starts the workers,
        # with the first batch, after this (skip_first_batches copies its worker_init_fn).
        loader = kwargs.get("train_dataloader")
        loader = getattr(loader, "base_dataloader", loader)
        if getattr(loader, "num_workers", 0) and not isinstance(loader.worker_init_fn, WorkersIgnoreStopSignals):
            loader.worker_init_fn = WorkersIgnoreStopSignals(loader.worker_init_fn)
        if state.is_world_process_zero:
            stale = os.path.join(args.output_dir, INTERRUPTED_FILE)
            if os.path.exists(stale):
                os.remove(stale)
        self.last_save = time.monotonic()
        received, _ = self._agree(args, state)
        if received:
            # Asked to stop while starting: no step taken, the checkpoint resumed from (if any) is current.
            resumed = os.path.join(args.output_dir, f"checkpoint-{state.global_step}") if state.global_step else None
            self._stop(args, state, signal_name(received), resumed)

    def on_step_end(self, args, state, control, **kwargs):
        received, due = self._agree(args, state)
        # At the last step the run saves and ends by itself.
        if received and state.global_step < state.max_steps:
            self.stopping = signal_name(received)
            if state.is_world_process_zero:
                logger.warning(
                    "%s received: saving a checkpoint after step %d and stopping", self.stopping, state.global_step
                )
            control.should_save = True
            control.should_training_stop = True
        elif due:
            if state.is_world_process_zero:
                logger.info(
                    "%.4g minutes since the last checkpoint: saving one at step %d",
                    self.interval / 60,
                    state.global_step,
                )
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        # Called after LlavaTrainer._save_checkpoint has marked the checkpoint complete on every rank.
        self.last_save = time.monotonic()
        if self.stopping:
            self._stop(args, state, self.stopping, os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

    def _stop(self, args, state, name: str, checkpoint: str | None):
        if state.is_world_process_zero:
            saved = checkpoint and os.path.abspath(checkpoint)
            record = {"signal": name, "step": state.global_step, "checkpoint": saved}
            path = os.path.join(args.output_dir, INTERRUPTED_FILE)
            with errors.saving(path, "the stop record"), open(path, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            where = f"checkpoint {saved} is complete" if saved else "no checkpoint yet, nothing trained"
            # One line, on rank 0 only, before any rank exits (a launcher stops the others at the first exit).
            sys.stderr.write(  # one write, so that no other rank's output lands inside the line
                f"stopped by {name} at step {state.global_step}: {where}; run the same command again to resume "
                f"(from the newest complete checkpoint in {os.path.abspath(args.output_dir)})\n"
            )
            sys.stderr.flush()
        if is_distributed():
            dist.barrier(group=self.group)
        raise TrainingInterrupted(name, state.global_step, checkpoint)
