"""A run told to stop saves one complete checkpoint and resumes with the losses of a run never stopped;
under SLURM it requeues itself; besides --save_steps, a checkpoint is saved every --save_every_minutes.

Two-process runs of train_italian_video.sh (torchrun, DeepSpeed ZeRO-2, CPU), with plain bash and under a
private SLURM cluster (tests/slurm_cluster.py). Runs are signalled once their log shows training steps, and
are long enough (STEPS) not to finish before the signal is acted upon.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from llava.train.checkpoints import COMPLETE_MARKER
from llava.train.preemption import (
    EXIT_INTERRUPTED,
    INTERRUPTED_FILE,
    StopAndIntervalCheckpoints,
    StopSignals,
    TrainingInterrupted,
)

from slurm_cluster import SlurmCluster
from test_launch_script import REPO, SCRIPT, TINY_FLAGS, clean_env, job_env, run_script, train_log_losses
from train_helpers import flag_tokens, make_assets, train_args

STEPS = 40
# No periodic checkpoint: the one a signal makes is the only one before the end.
FLAGS = {**TINY_FLAGS, "max_steps": STEPS, "save_steps": 1000, "deepspeed": "scripts/zero2.json"}
# One thread per process, so that runs with plain bash and under SLURM compute the same losses on any machine.
LAUNCH = {"NPROC": 2, "OMP_NUM_THREADS": 1}
STOPPED_LINE = re.compile(
    r"stopped by (SIG\w+) at step (\d+): checkpoint (\S+) is complete; run the same command again to resume"
)


# ------------------------------------------------------------------------------------------- helpers
def final_losses(output_dir: Path) -> dict[int, float]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def assert_same_losses(got: dict[int, float], expected: dict[int, float]) -> None:
    assert sorted(got) == sorted(expected) == list(range(1, STEPS + 1)), (sorted(got), sorted(expected))
    different = {s: (got[s], expected[s]) for s in expected if abs(got[s] - expected[s]) > 1e-6}
    assert not different, different


def wait_for(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(poll)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s")


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def is_training_rank(pid: int) -> bool:
    """A process torchrun started for llava.train.train (not torchrun, srun or a shell naming it)."""
    argv = cmdline(pid)
    return "llava.train.train" in argv and "llava.train.launch" not in argv and "LOCAL_RANK" in environ(pid)


def ranks_below(launcher_pid: int) -> dict[int, int]:
    """{local rank: pid} of the training processes started by the torchrun with pid `launcher_pid`."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and is_training_rank(int(entry)):
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == launcher_pid:
                found[int(environ(int(entry))["LOCAL_RANK"])] = int(entry)
    return found


def pending_signals(pid: int) -> int:
    """The signals pending on a process (thread- and process-directed), as a bit mask."""
    mask = 0
    for line in read(Path(f"/proc/{pid}/status")).splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")):
            mask |= int(line.split()[1], 16)
    return mask


def assert_stopped_and_saved(log: str, output: Path, signal_name: str, steps: int = STEPS) -> int:
    """The run printed the line of a stop on `signal_name` and left that checkpoint complete; returns its step."""
    match = STOPPED_LINE.search(log)
    assert match, log[-5000:]
    assert match.group(1) == signal_name, match.group(0)
    step, checkpoint = int(match.group(2)), Path(match.group(3))
    assert 1 <= step < steps, f"the run was not stopped before its last step: {match.group(0)}"
    assert checkpoint == (output / f"checkpoint-{step}").resolve(), match.group(0)
    return step


@pytest.fixture(scope="module")
def reference_losses(script_assets, tmp_path_factory):
    """Per-step losses of the same run, never stopped."""
    output = tmp_path_factory.mktemp("reference") / "run"
    result = run_script(clean_env(**LAUNCH), *flag_tokens(FLAGS, script_assets.video, output_dir=output), timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    return final_losses(output)


# ----------------------------------------------------------------- the callback and the handler alone
def test_a_signal_is_recorded_while_active_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # a later one changes nothing
        time.sleep(0.05)
        assert stop.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before


def test_a_stop_asked_for_before_the_first_step_points_at_the_checkpoint_resumed_from(tmp_path, capsys):
    stop = StopSignals()
    stop.received = signal.SIGTERM
    callback = StopAndIntervalCheckpoints(stop, save_every_minutes=30)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(TrainingInterrupted) as stopped:
        callback.on_train_begin(args, TrainerState(global_step=6, max_steps=10), TrainerControl())
    assert (stopped.value.signal_name, stopped.value.step) == ("SIGTERM", 6)
    record = json.loads((tmp_path / INTERRUPTED_FILE).read_text())
    assert record == {"signal": "SIGTERM", "step": 6, "checkpoint": str(tmp_path / "checkpoint-6")}
    assert STOPPED_LINE.search(capsys.readouterr().err)


def test_the_time_based_checkpoint_is_due_after_the_interval_since_the_last_save(tmp_path):
    callback = StopAndIntervalCheckpoints(StopSignals(), save_every_minutes=30)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    state = TrainerState(global_step=1, max_steps=10)
    callback.on_train_begin(args, state, TrainerControl())
    control = TrainerControl()
    callback.on_step_end(args, state, control)
    assert not control.should_save and not control.should_training_stop
    callback.last_save -= 30 * 60  # as if the last checkpoint were half an hour old
    callback.on_step_end(args, state, control)
    assert control.should_save and not control.should_training_stop
    callback.on_save(args, state, control)  # the clock starts again at every save
    control = TrainerControl()
    callback.on_step_end(args, state, control)
    assert not control.should_save

    no_saves = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no")
    callback.on_train_begin(no_saves, state, TrainerControl())
    callback.last_save -= 30 * 60
    callback.on_step_end(no_saves, state, control)
    assert not control.should_save, "--save_strategy no: no time-based checkpoints either"


# --------------------------------------------------------------------------- plain bash (no SLURM)
@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("target", ["launcher", "one rank"])
def test_sigterm_saves_a_checkpoint_exits_nonzero_and_a_rerun_resumes(
    target, script_assets, reference_losses, tmp_path
):
    """SIGTERM to torchrun (as `kill` sends it), or to one rank only (the other rank never sees a signal:
    it learns of it at the next step boundary): one checkpoint, a non-zero exit and one line saying where
    it saved; the same command again resumes from it with the losses of a run never stopped."""
    output, log_path = tmp_path / "run", tmp_path / "run.log"
    env, arguments = clean_env(**LAUNCH), flag_tokens(FLAGS, script_assets.video, output_dir=output)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT), *arguments],
            env=env,
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        try:
            wait_for(
                lambda: len(train_log_losses(read(log_path))) >= 3 or proc.poll() is not None,
                240,
                "three training steps",
            )
            assert proc.poll() is None, read(log_path)[-5000:]
            if target == "launcher":
                os.kill(proc.pid, signal.SIGTERM)  # the script execs torchrun
            else:
                ranks = wait_for(lambda: ranks_below(proc.pid), 10, "finding the ranks")
                os.kill(ranks[1], signal.SIGTERM)
            rc = proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    log = read(log_path)
    assert rc != 0, log[-5000:]
    step = assert_stopped_and_saved(log, output, "SIGTERM")
    assert len(STOPPED_LINE.findall(log)) == 1, "one line, from rank 0 only"
    assert (output / f"checkpoint-{step}" / COMPLETE_MARKER).is_file()
    assert list((output / f"checkpoint-{step}").glob("global_step*")), "no DeepSpeed state in the checkpoint"
    assert json.loads((output / INTERRUPTED_FILE).read_text())["step"] == step
    assert not (output / "model.safetensors").exists(), "a stopped run saved a final model"
    if target == "one rank":
        return  # resuming is the same either way

    again = run_script(env, *arguments, timeout=300)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-5000:]
    assert f"resuming from {output}/checkpoint-{step}" in log, log[-5000:]
    assert not (output / INTERRUPTED_FILE).exists()
    assert_same_losses(final_losses(output), reference_losses)


@pytest.mark.slow
def test_sigterm_to_every_process_with_dataloader_workers(tmp_path):
    """SLURM signals every process of a job step, DataLoader workers included, and torch's workers die of a
    SIGTERM their parent did not send, which crashed the rank before it could save. One process (no
    launcher), two workers, SIGTERM to the whole process group: it saves and exits with status 75."""
    assets = make_assets(tmp_path / "assets", num_train=24, num_val=2)  # 12 steps an epoch: the workers are busy
    output, log_path = tmp_path / "run", tmp_path / "run.log"
    args = train_args(
        assets,
        output,
        "--dataloader_num_workers",
        "2",
        "--save_steps",
        "1000",
        "--per_device_train_batch_size",
        "2",
        "--disable_tqdm",
        "False",
        steps=200,
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llava.train.train", *args],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: len(train_log_losses(read(log_path))) >= 3 or proc.poll() is not None,
                240,
                "three training steps",
            )
            assert proc.poll() is None, read(log_path)[-5000:]
            os.killpg(proc.pid, signal.SIGTERM)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    log = read(log_path)
    assert rc == EXIT_INTERRUPTED, log[-5000:]
    step = assert_stopped_and_saved(log, output, "SIGTERM", steps=200)
    assert (output / f"checkpoint-{step}" / COMPLETE_MARKER).is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_a_checkpoint_is_saved_every_few_minutes_besides_save_steps(script_assets, tmp_path):
    """--save_every_minutes: with --save_steps far beyond the run, checkpoints still come, all complete, on
    both ranks together (rank 0's clock decides for all)."""
    output = tmp_path / "run"
    steps = 20
    flags = {**FLAGS, "max_steps": steps, "save_total_limit": 100, "save_every_minutes": 0.002}  # 0.12 s
    result = run_script(clean_env(**LAUNCH), *flag_tokens(flags, script_assets.video, output_dir=output), timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "--save_every_minutes 0.002" in result.stdout
    saved = sorted(int(p.name.split("-")[1]) for p in output.glob("checkpoint-*"))
    early = [s for s in saved if s < steps]
    assert len(early) >= 2, f"no time-based checkpoints before the last step: {saved}"
    for s in early:
        checkpoint = output / f"checkpoint-{s}"
        assert (checkpoint / COMPLETE_MARKER).is_file() and list(checkpoint.glob("global_step*")), checkpoint
    assert "minutes since the last checkpoint" in log


# ------------------------------------------------------------------------------------ under SLURM
class Job:
    """`sbatch --wait train_italian_video.sh ARGUMENTS` running in the background, its log one file (the
    script's --open-mode=append keeps every incarnation of a requeued job in it)."""

    def __init__(
        self, cluster: SlurmCluster, env: dict, arguments: list[str], folder: Path, *sbatch_args: str, cpus: int = 2
    ):
        self.cluster, self.log_path = cluster, folder / "job.out"
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            "sbatch",
            "--wait",
            "--parsable",
            f"--output={self.log_path}",
            "--gpus-per-node=0",
            f"--cpus-per-task={min(os.cpu_count() or 1, cpus)}",
            *sbatch_args,
            str(SCRIPT),
            *arguments,
        ]
        self.proc = subprocess.Popen(
            command, env=job_env(cluster, env), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.id = wait_for(
            lambda: cluster.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()[:1],
            30,
            "the job to be queued",
        )[0]

    def log(self) -> str:
        return read(self.log_path)

    def restarts(self) -> int:
        return int(self.cluster.job_info(self.id).get("Restarts", -1))

    def wait(self, timeout: float) -> tuple[int, str]:
        try:
            self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cluster.run(["scancel", self.id], check=False)
            self.proc.communicate(timeout=30)
            pytest.fail(
                f"job {self.id} did not end within {timeout:.0f} s\n{self.log()[-6000:]}\n"
                f"{self.cluster.daemon_log_tails()}"
            )
        return self.proc.returncode, self.log()


def training_ranks(cluster: SlurmCluster) -> list[int]:
    return [pid for pid in cluster.leftover_pids() if is_training_rank(pid)]


def assert_requeued_and_finished(rc: int, log: str, output: Path, reference: dict, signal_name: str):
    assert rc == 0, log[-8000:]
    step = assert_stopped_and_saved(log, output, signal_name)
    assert re.search(r"requeued job \d+ \(restart 1 of at most \d+\)", log), log[-6000:]
    assert f"resuming from {output}/checkpoint-{step}" in log, log[-6000:]
    assert (output / "model.safetensors").is_file() and not (output / INTERRUPTED_FILE).exists()
    assert_same_losses(final_losses(output), reference)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.slurm
def test_preempted_job_saves_requeues_resumes_and_finishes(slurm_cluster, script_assets, reference_losses, tmp_path):
    """`scancel --signal=USR1` (a preemption notice: every process of the job step gets it, torchrun
    included, the batch shell not): one checkpoint, the job requeues itself, the next start resumes and
    finishes with the losses of a run never stopped."""
    output = tmp_path / "run"
    arguments = flag_tokens(FLAGS, script_assets.video, output_dir=output)
    job = Job(slurm_cluster, clean_env(**LAUNCH), arguments, tmp_path / "logs", "--time=15")
    wait_for(lambda: len(train_log_losses(job.log())) >= 3 or job.proc.poll() is not None, 240, "three training steps")
    assert job.proc.poll() is None, job.log()[-6000:]
    slurm_cluster.run(["scancel", "--signal=USR1", job.id])
    rc, log = job.wait(timeout=300)
    assert_requeued_and_finished(rc, log, output, reference_losses, "SIGUSR1")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.slurm
def test_job_at_its_time_limit_is_warned_saves_requeues_resumes_and_finishes(
    slurm_cluster, script_assets, reference_losses, tmp_path
):
    """A two-minute job: SLURM's warning (the script's `--signal=B:USR1@...`, here 5 s before the end)
    reaches the batch shell, which passes it on through srun. The ranks are held (SIGSTOP) from their
    second step until the warning is pending on them, standing in for a run longer than its time limit
    (without that hold, the run would need minutes of steps); then they go on, save, and the job requeues
    itself and finishes. Two minutes, not one: the ranks must reach their second step before the warning,
    and `make test` runs other tests on the same cores meanwhile."""
    header = re.search(r"^#SBATCH --signal=(\S+)@(\d+)$", SCRIPT.read_text(), re.M)
    assert header and header.group(1) == "B:USR1", "the script asks SLURM for a USR1 to the batch shell"
    output = tmp_path / "run"
    arguments = flag_tokens(FLAGS, script_assets.video, output_dir=output)
    job = Job(slurm_cluster, clean_env(**LAUNCH), arguments, tmp_path / "logs", "--time=2", "--signal=B:USR1@5")
    wait_for(lambda: len(train_log_losses(job.log())) >= 2 or job.proc.poll() is not None, 240, "two training steps")
    ranks = training_ranks(slurm_cluster)
    assert len(ranks) == 2, job.log()[-6000:]
    for pid in ranks:
        os.kill(pid, signal.SIGSTOP)
    try:
        usr1 = 1 << (signal.SIGUSR1 - 1)
        wait_for(lambda: all(pending_signals(pid) & usr1 for pid in ranks), 180, "SLURM's warning signal")
    finally:
        for pid in ranks:
            os.kill(pid, signal.SIGCONT)
    rc, log = job.wait(timeout=300)
    assert "SLURM asks this job to stop (SIGUSR1)" in log, log[-6000:]
    assert_requeued_and_finished(rc, log, output, reference_losses, "SIGUSR1")


STUB_TRAIN = """\
import json, os, sys
out = sys.argv[sys.argv.index('--output_dir') + 1]
os.makedirs(out, exist_ok=True)
if os.environ['RANK'] == '0':
    with open(os.path.join(out, 'incarnations.txt'), 'a') as f:
        f.write(os.environ.get('SLURM_RESTART_COUNT', '0') + '\\n')
    if os.environ['STUB_STOPS'] == '1':
        with open(os.path.join(out, {marker!r}), 'w') as f:
            json.dump({{'signal': 'SIGUSR1', 'step': 1, 'checkpoint': None}}, f)
sys.exit(int(os.environ['STUB_EXIT']))
"""


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.parametrize(
    "case, variables, incarnations, says",
    [
        (
            "stopped twice, one requeue allowed",
            {"STUB_STOPS": 1, "STUB_EXIT": 75, "MAX_REQUEUES": 1},
            2,
            "MAX_REQUEUES=1",
        ),
        ("stopped, requeue off", {"STUB_STOPS": 1, "STUB_EXIT": 75, "REQUEUE": 0}, 1, "REQUEUE=0"),
        ("failed without a stop", {"STUB_STOPS": 0, "STUB_EXIT": 1}, 1, None),
    ],
)
def test_requeue_only_after_a_saved_stop_and_a_bounded_number_of_times(
    case, variables, incarnations, says, slurm_cluster, dummy_paths, tmp_path
):
    """The requeue decision, with a stand-in training module: it stops (writes interrupted.json and
    exits 75, as a run stopped by a signal does) or fails (exits 1, nothing written)."""
    module_dir = tmp_path / "stub"
    module_dir.mkdir()
    (module_dir / "stub_train.py").write_text(STUB_TRAIN.format(marker=INTERRUPTED_FILE))
    output = tmp_path / "out"
    env = clean_env(NPROC=1, TRAIN_MODULE="stub_train", PYTHONPATH=module_dir, **variables)
    job = Job(
        slurm_cluster, env, flag_tokens(dummy_paths.video, output_dir=output), tmp_path / "logs", "--time=5", cpus=1
    )
    rc, log = job.wait(timeout=120)
    assert rc != 0, log
    assert (output / "incarnations.txt").read_text().split() == [str(i) for i in range(incarnations)], log
    assert len(re.findall(r"requeued job", log)) == incarnations - 1, log
    if says:
        assert f"not requeueing: {says}" in log, log
