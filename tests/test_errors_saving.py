"""A full disk or a refused write while saving says so in one line, and loses nothing already saved.

The disks are real: a small tmpfs, sized so that a tiny run's first checkpoint fits and its second does
not, and a tmpfs remounted read-only between two checkpoint saves. Each run is the real entry point in
a fresh process, which prints exactly one `error: ` line and no traceback (a missing data file, found before
anything loads, runs cache_features' cli in this process: entry_points.py). Mounting needs root; the tests
skip, saying why, where it is refused.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.errors import size_text
from llava.train import cache_features, checkpoints
from llava.train.checkpoints import COMPLETE_MARKER

from disk_helpers import SmallDisks
from entry_points import run_cli_with_process_output
from train_helpers import ROOT, run_training, train_args

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# A checkpoint of the tiny run (conftest's `assets`: GPT-2 of 190k parameters with Adam) takes about
# 2.1 MB: one fits on this disk, two do not.
CHECKPOINT_DISK = "3m"


def error_line(stderr: str) -> str:
    """The run's one `error: ` line (training logs its summary line after it); no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def complete_checkpoints(output_dir: Path) -> list[Path]:
    return sorted(
        (p for p in output_dir.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )


def manifest_bytes(checkpoint: Path) -> int:
    manifest = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    return sum(size for size, _ in manifest["files"].values())


# ---------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_says_so_and_the_run_resumes_from_the_one_before(assets, disks):
    disk = disks.mount("disk", CHECKPOINT_DISK)
    out = disk / "out"
    args = train_args(assets, out, steps=4)  # checkpoints at steps 2 and 4

    failed = run_training(args)
    assert failed.returncode == 1, failed.stderr[-3000:]
    previous = out / "checkpoint-2"
    assert complete_checkpoints(out) == [previous], f"the disk is sized for one {size_text(2_100_000)} checkpoint"
    # The estimate of what checkpoint-4 needs is the size of the complete checkpoint before it (the
    # larger of that and the model + optimizer tensors, which leave out the small files).
    needed = size_text(manifest_bytes(previous))
    message = re.fullmatch(
        rf"error: no space left on the device saving checkpoint-4 \({re.escape(str(out / 'checkpoint-4'))}: "
        rf"needs about {re.escape(needed)}, (\d+(?:\.\d)? (?:bytes|KB|MB)) free\)",
        error_line(failed.stderr),
    )
    assert message, failed.stderr[-3000:]
    free_value, free_unit = message.group(1).split()
    assert float(free_value) * {"bytes": 1, "KB": 1e3, "MB": 1e6}[free_unit] < manifest_bytes(previous)

    # The checkpoint before is intact; the one cut short is gone (it never got its marker).
    assert checkpoints.damage(str(previous)) is None
    assert not (out / "checkpoint-4").exists()

    # With room for checkpoint-4 (as much again as is used) but not for the final model after it, the
    # same command resumes from checkpoint-2, saves checkpoint-4, and says the final model does not fit.
    model_file = (previous / "model.safetensors").stat().st_size
    assert disks.remount(disk, f"size={2 * shutil.disk_usage(disk).used + model_file // 2}").returncode == 0
    resumed = run_training(args)
    assert resumed.returncode == 1, resumed.stderr[-3000:]
    assert f"resuming from {previous}" in resumed.stderr
    assert complete_checkpoints(out) == [previous, out / "checkpoint-4"]
    assert checkpoints.damage(str(out / "checkpoint-4")) is None
    assert re.fullmatch(
        rf"error: no space left on the device saving the model \({re.escape(str(out))}: "
        r"needs about [\d.]+ (KB|MB), [\d.]+ (bytes|KB) free\)",
        error_line(resumed.stderr),
    ), resumed.stderr[-3000:]

    # With room, it resumes from checkpoint-4 and saves the final model.
    assert disks.remount(disk, "size=64m").returncode == 0
    finished = run_training(args)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint-4'}" in finished.stderr
    assert (out / "model.safetensors").stat().st_size == model_file


@pytest.mark.slow
@pytest.mark.distributed
def test_a_full_disk_under_deepspeed_names_the_rank_and_keeps_the_checkpoint_before(assets, disks):
    # ZeRO-2 on two ranks: rank 0 writes the model and DeepSpeed's copy of the module states, each rank
    # its optimizer shard through DeepSpeed's engine (torch.save); whichever write finds the disk full,
    # its rank says so. A checkpoint takes about 3.7 MB here: one fits, two do not.
    disk = disks.mount("disk", "5500k")
    out = disk / "out"
    args = train_args(
        assets, out, "--deepspeed", str(ROOT / "scripts" / "zero2.json"), "--per_device_train_batch_size", "2", steps=4
    )
    failed = run_training(args, launcher=TORCHRUN, env={"OMP_NUM_THREADS": "1"})
    assert failed.returncode != 0
    # The other rank, left waiting in a collective, ends as the launcher stops it (with its own report).
    assert re.search(
        rf"^error: rank [01]: no space left on the device saving checkpoint-4 \({re.escape(str(out / 'checkpoint-4'))}: "
        r"needs about [\d.]+ MB, [\d.]+ (bytes|KB|MB) free\)$",
        failed.stderr,
        flags=re.MULTILINE,
    ), failed.stderr[-5000:]
    previous = out / "checkpoint-2"
    assert complete_checkpoints(out) == [previous]
    assert checkpoints.damage(str(previous)) is None
    # The one cut short stays (other ranks may still have been writing into it) but has no marker: the
    # next start resumes from checkpoint-2.
    assert checkpoints.newest_complete_checkpoint(str(out)) == str(previous)


def _stopped(pid: int) -> bool:
    """Whether the process has stopped (state T) after a SIGSTOP."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0] in ("T", "t")


def _make_read_only_between_saves(run: subprocess.Popen, disk: Path, out: Path, deadline: float) -> None:
    """Remounts `disk` read-only while the run is stopped outside any checkpoint save, once it has saved
    one: every checkpoint folder there is has its marker (a save starts by making its folder), and no
    file is open for writing (the remount refuses otherwise). A stopped process starts no save meanwhile."""

    def saved_one() -> bool:
        return any((f / COMPLETE_MARKER).is_file() for f in out.glob("checkpoint-*"))

    while not saved_one():
        assert run.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    while time.monotonic() < deadline:
        assert run.poll() is None, "the run ended before its disk was made read-only"
        os.kill(run.pid, signal.SIGSTOP)
        try:
            while not _stopped(run.pid):
                time.sleep(0.01)
            complete = all((f / COMPLETE_MARKER).is_file() for f in out.glob("checkpoint-*"))
            if complete and SmallDisks.remount(disk, "ro").returncode == 0:
                return
        finally:
            os.kill(run.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the disk could not be made read-only between two checkpoint saves")


@pytest.mark.slow
def test_a_disk_turned_read_only_during_a_run_says_so_at_the_next_checkpoint(assets, disks, tmp_path):
    disk = disks.mount("disk", "64m")
    out = disk / "out"
    command = [sys.executable, "-m", "llava.train.train", *train_args(assets, out, steps=200)]
    log = tmp_path / "stderr.txt"  # a file, not a pipe: nobody reads a pipe while the test waits
    with (
        open(log, "w") as stderr_file,
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
        ) as run,
    ):
        try:
            _make_read_only_between_saves(run, disk, out, deadline=time.monotonic() + 300)
            run.wait(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
    stderr = log.read_text()
    assert run.returncode == 1, stderr[-3000:]
    newest = complete_checkpoints(out)[-1]
    step = int(newest.name.split("-")[1]) + 2  # --save_steps 2
    assert (
        error_line(stderr) == f"error: read-only file system saving checkpoint-{step} ({out / f'checkpoint-{step}'})"
    ), stderr[-3000:]
    assert checkpoints.damage(str(newest)) is None


# ------------------------------------------------------------------------------- cache_features
def run_cache_features(assets, cache_dir, *extra):
    command = [
        sys.executable,
        "-m",
        "llava.train.cache_features",
        "--vision_tower",
        assets["tower"],
        "--data_path",
        assets["train"],
        "--video_folder",
        assets["video_folder"],
        "--num_frames",
        "8",
        "--feature_cache",
        str(cache_dir),
        "--dataloader_num_workers",
        "0",
        *extra,
    ]
    return subprocess.run(
        command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_cache_features_on_a_full_disk_says_so_and_leaves_no_shard(assets, disks):
    # The 8 clips' features (8 frames x 8 x 8 patches x 32 channels in float16: 32 KiB each) make one
    # shard of about 260 KB; the disk holds the namespace's manifest and not much more.
    disk = disks.mount("disk", "64k")
    cache = disk / "cache"
    done = run_cache_features(assets, cache)
    assert done.returncode == 1, done.stderr[-3000:]
    (namespace,) = cache.iterdir()
    assert re.fullmatch(
        rf"error: no space left on the device saving a feature cache shard \({re.escape(str(namespace))}: "
        r"needs about 2\d\d\.\d KB, \d+(\.\d)? (bytes|KB) free\)",
        error_line(done.stderr),
    ), done.stderr[-3000:]
    # Shards are renamed into place once whole: neither a shard nor its temporary file is left.
    assert sorted(p.name for p in namespace.iterdir()) == ["manifest.json"]


@pytest.mark.slow
def test_cache_features_into_a_read_only_folder_fails_before_the_tower_loads(assets, disks):
    disk = disks.mount("disk", "1m")
    assert disks.remount(disk, "ro").returncode == 0
    cache = disk / "cache"
    done = run_cache_features(assets, cache)
    assert done.returncode == 1, done.stderr[-3000:]
    assert (
        error_line(done.stderr)
        == f"error: read-only file system: --feature_cache folder {cache} cannot be written ({disk})"
    )
    assert "Loading weights" not in done.stderr


def test_cache_features_names_a_missing_data_file_in_one_line(assets, tmp_path, monkeypatch):
    # In this process (the failure comes before the tower loads); the tests above run its `python -m`.
    missing = tmp_path / "missing.json"
    monkeypatch.chdir(ROOT)
    done = run_cli_with_process_output(
        cache_features.cli,
        ["--vision_tower", assets["tower"], "--data_path", str(missing), "--feature_cache", str(tmp_path / "cache")],
    )
    assert done.returncode == 1
    assert error_line(done.stderr) == f"error: --data_path file does not exist ({missing})"
