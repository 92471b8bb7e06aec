"""`python -m llava.bench.versions` times two code versions side by side in one run: a git worktree of the
revision before, this working tree after, each built and timed in a process of its own."""

import subprocess
import sys

import pytest

from train_helpers import ROOT


@pytest.mark.slow
def test_two_versions_are_timed_side_by_side_on_the_demo_shapes(tmp_path):
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode:
        pytest.fail(f"the tests run from a git checkout: {head.stderr}")
    output, workdir = tmp_path / "versions.md", tmp_path / "work"
    command = [sys.executable, "-m", "llava.bench.versions", "--before", "HEAD", "--config", "demo"]
    command += ["--repeats", "1", "--workers", "1", "--workdir", str(workdir), "--output", str(output)]
    short = head.stdout.strip()
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        # The version before was built in its own worktree, by its own code, in a work folder of its own.
        assert (workdir / "versions" / short / "llava" / "bench").is_dir()
        assert (workdir / "versions" / f"{short}-work" / "demo" / "feature-cache").is_dir()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(workdir / "versions" / short)], cwd=ROOT)
    table = output.read_text()
    assert f"| measure | before: {short} | after: {short}" in table
    for row in (
        "train step cached",
        "train step, language model alone",
        "the cached step's share of the bound",
        "data loader alone, cached (batch 8, 0 workers)",
        "data loader alone, cached (batch 8, 1 workers)",
    ):
        line = next(line for line in table.splitlines() if line.startswith(f"| {row}"))
        values = [cell.strip().strip("*%") for cell in line.split("|")[2:-1]]
        assert len(values) == 2 and all(float(v) > 0 for v in values), line


def test_an_unknown_revision_is_one_line(tmp_path):
    command = [sys.executable, "-m", "llava.bench.versions", "--before", "no-such-revision-here"]
    result = subprocess.run(command + ["--workdir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "no-such-revision-here" in result.stderr, result.stderr
