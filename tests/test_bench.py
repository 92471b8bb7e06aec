"""`python -m llava.bench` runs end to end on the demo's shapes and writes its table (the figures are
measurements, reported, never asserted)."""

import subprocess
import sys

import pytest

from train_helpers import ROOT

pytestmark = pytest.mark.slow


def test_bench_runs_on_the_demo_shapes_and_writes_the_table(tmp_path):
    output = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava.bench",
            "--configs",
            "demo",
            "--repeats",
            "1",
            "--workers",
            "1",
            "--workdir",
            str(tmp_path / "work"),
            "--output",
            str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    table = output.read_text()
    for row in (
        "train step online",
        "train step cached",
        "cached / online step speed",
        "online forward+backward vs tower + LM",
        "decode 8 frames, decord",
        "decode 8 frames, pyav",
        "data loader online",
        "data loader cached",
        "epoch through the data loader",
        "achieved FLOP/s, online step",
        "generation, batch 1",
        "generation time shares, batch 1",
        "LM decoding vs forward-only bound, batch 1",
        "generation, batch 16",
        "generation time shares, batch 16",
        "LM decoding vs forward-only bound, batch 16",
        "generation captions/s, batch 16 / batch 1",
    ):
        assert f"| {row}" in table, row
    assert "## demo" in table and "cores" in table and "Load average" in table
