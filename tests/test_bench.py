"""`python -m llava.bench` runs end to end on the demo's shapes and writes its table (the figures are
measurements, reported, never asserted)."""

import subprocess
import sys

import pytest

from train_helpers import ROOT


@pytest.mark.slow
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
        "train step, language model alone",
        "the bound: online step / language model's step",
        "cached forward+backward vs LM alone",
        "memory copy, this machine",
        "data loader alone, online",
        "data loader alone, cached",
        "an H100's cached step at these shapes would consume",
        "first epoch through the data loader",
        "cached epochs 2-4 (workers kept)",
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


def test_the_loader_rows_use_the_recipes_batch_and_workers():
    """The data path is measured as the headline run loads its data: the recipe's values, not copies that
    drift from it."""
    from llava.bench import cli, data_path
    from llava.train.recipe import value_of

    recipe = ["--config", str(ROOT / "recipes" / "italian_video.yaml")]
    assert int(value_of("per_device_train_batch_size", recipe)) == data_path.RECIPE_BATCH
    assert int(value_of("dataloader_num_workers", recipe)) == cli.DEFAULT_WORKERS
