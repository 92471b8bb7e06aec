"""llava.train.launch: torchrun whose failure ends in one line naming the rank, its node and the cause.
The ranks here are small scripts (no model), run by the real launcher with two processes; the killed
training rank is in test_ranks.py, a real run stopped by a signal in test_preemption.py."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

ROOT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()

RANK_SCRIPT = """
import os, signal, sys, time
if os.environ["RANK"] == "1":
    if sys.argv[1] == "raise":
        from torch.distributed.elastic.multiprocessing.errors import record
        record(lambda: (_ for _ in ()).throw(ValueError("bad value\\non two lines")))()
    if sys.argv[1] == "exit":
        from llava.errors import say_error  # what a failing training rank writes, in one write
        say_error("the rank's own line (here)")
        sys.exit(1)
def stop(*_):
    sys.stderr.write(f"rank {os.environ['RANK']} stopped\\n")
    sys.exit(75)
signal.signal(signal.SIGTERM, stop)
sys.stderr.write(f"rank {os.environ['RANK']} started\\n")  # one write: the ranks share the stream
time.sleep(60)
"""


def launch(tmp_path, mode, **popen):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    command = [sys.executable, "-m", "llava.train.launch", "--standalone", "--nproc_per_node", "2", str(script), mode]
    env = {**os.environ, "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT", "LLAVA_DEBUG": ""}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


@pytest.mark.parametrize(
    "mode, line",
    [
        ("exit", "error: the rank's own line (here)"),  # an expected failure: nothing added to its line
        ("raise", f"error: rank 1 ({HOST}) failed: ValueError: bad value on two lines (its traceback is above)"),
    ],
)
def test_a_failed_rank_is_named_in_the_last_line(tmp_path, mode, line):
    job = launch(tmp_path, mode)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 1, stderr[-3000:]
    assert [row for row in stderr.splitlines() if row.startswith("error: ")] == [line], stderr[-3000:]
    assert "ChildFailedError" not in stderr and "failed (exitcode" not in stderr, stderr[-3000:]


def test_a_signal_to_the_launcher_reaches_the_ranks_and_ends_without_a_traceback(tmp_path):
    job = launch(tmp_path, "wait")
    lines = []
    while len([line for line in lines if line.endswith("started")]) < 2:  # both ranks run
        line = job.stderr.readline()
        assert line, "".join(lines)
        lines.append(line.rstrip())
    time.sleep(0.5)
    job.send_signal(signal.SIGTERM)
    rest = job.communicate(timeout=120)[1]
    stderr = "\n".join(lines) + "\n" + rest
    assert job.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "rank 0 stopped" in stderr and "rank 1 stopped" in stderr, stderr[-3000:]
    assert "Traceback" not in stderr and "error:" not in stderr, stderr[-3000:]
