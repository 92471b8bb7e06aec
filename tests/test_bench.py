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


def test_the_cost_section_survives_a_regeneration_of_the_table(tmp_path):
    """babylm_cost writes its section into docs/benchmarks.md; the main benchmark's rewrite keeps it, and a
    new cost run replaces it rather than adding a second."""
    import argparse

    from llava.bench import babylm_cost, report

    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nold table\n")
    rows = [{"task": "blimp", "set": "fast", "items": 10, "s_per_item": 0.5}]
    body = babylm_cost.report(rows, argparse.Namespace(items=4, image_items=1), "machine")
    report.write_section(path, babylm_cost.SECTION, body)
    assert "| 10 x 0.5000 = 5 |" in path.read_text() and "old table" in path.read_text()
    report.write_markdown(path, "machine", {}, "--configs seed", "load")
    text = path.read_text()
    assert "old table" not in text and text.count(babylm_cost.SECTION) == 1 and "| 10 x 0.5000 = 5 |" in text
    report.write_section(path, babylm_cost.SECTION, body.replace("0.5000", "0.2500").replace("= 5 |", "= 2 |"))
    text = path.read_text()
    assert text.count(babylm_cost.SECTION) == 1 and "= 2 |" in text and "= 5 |" not in text
    assert text.startswith("# Benchmarks")
