"""`python -m llava.eval.compare`: runs of several conditions and seeds set side by side from their
curves.jsonl and run.json (written by training), means and standard deviations over seeds computed by
hand, the CSV's shape, the plots, and bad inputs in one line."""

import csv
import json
import math
from pathlib import Path

import pytest

from llava.data.run_record import RUN_RECORD
from llava.eval import compare

from entry_points import run_cli

BLIMP = "babylm:blimp:blimp_fast"


def write_run(folder, points, record=None):
    """A run folder as training and curves leave it: run.json (unless None) and curves.jsonl rows
    {checkpoint: {measure: value}}, with word counts near each milestone's name."""
    folder.mkdir(parents=True)
    if record is not None:
        (folder / RUN_RECORD).write_text(json.dumps(record))
    words = {"checkpoint-words-1M": 1_000_013, "checkpoint-words-10M": 10_000_029, "final": 12_345_678}
    rows = [
        {"checkpoint": checkpoint, "words": words[checkpoint], "suite": "s", "measure": measure, "group": None,
         "value": value, "chance": None, "n": 10, "source": "x", "evaluated": "now"}
        for checkpoint, measures in points.items()
        for measure, value in measures.items()
    ]  # fmt: skip
    rows.append({**rows[0], "group": "agreement", "value": 99.0})  # a group's row: not part of the matrix
    (folder / "curves.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    text1 = write_run(tmp_path / "text-s1", {"checkpoint-words-1M": {BLIMP: 60.0, "grammar": 0.6},
                                             "checkpoint-words-10M": {BLIMP: 70.0}, "final": {BLIMP: 72.0}},
                      {"condition": "text", "seed": 1})  # fmt: skip
    text2 = write_run(tmp_path / "text-s2", {"checkpoint-words-1M": {BLIMP: 64.0, "grammar": 0.5},
                                             "final": {BLIMP: 75.0}},
                      {"condition": "text", "seed": 2})  # fmt: skip
    video = write_run(tmp_path / "video-s1", {"checkpoint-words-1M": {BLIMP: 66.0},
                                              "checkpoint-words-10M": {BLIMP: 71.5}, "final": {BLIMP: 80.0}})  # fmt: skip
    return text1, text2, video


def test_conditions_side_by_side_with_the_mean_and_spread_over_seeds(runs, tmp_path, capsys):
    text1, text2, video = runs
    out = tmp_path / "cmp"
    result = compare.main([text1, text2, video, "--out", str(out), "--condition", "video-s1=video+text"])
    with open(out / "comparison.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["Dataset", "Words (Millions)", "text", "text_sd", "text_n", "video+text"]
    rows = {(r[0], r[1]): r[2:] for r in table[1:]}
    sd = math.sqrt(((60 - 62) ** 2 + (64 - 62) ** 2) / (2 - 1))  # the sample standard deviation of 60 and 64
    assert rows[("blimp_fast", "1")] == ["62", f"{sd:.4g}", "2", "66"]
    assert rows[("blimp_fast", "10")] == ["70", "", "1", "71.5"]  # one seed has it: no spread
    assert rows[("blimp_fast", f"{12.345678:g}")] == ["73.5", f"{math.sqrt(4.5):.4g}", "2", "80"]
    assert rows[("grammar", "1")] == ["0.55", f"{math.sqrt(0.005):.4g}", "2", ""]
    assert [r[0] for r in table[1:]] == ["grammar", "blimp_fast", "blimp_fast", "blimp_fast"]  # words ascending
    assert [p.rsplit("/", 1)[1] for p in result["plots"]] == ["grammar.png", "blimp_fast.png"]
    for png in result["plots"]:
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:2] == ["Dataset", "Words"] and len(printed) == len(table)


def test_a_seed_flag_tells_apart_runs_that_recorded_none(runs, tmp_path):
    _, _, video = runs
    other = write_run(tmp_path / "video-s2", {"checkpoint-words-1M": {BLIMP: 70.0}})
    argv = [video, other, "--out", str(tmp_path / "cmp"), "--no-plot", "--condition", f"{video}=video+text"]
    argv += ["--condition", "video-s2=video+text", "--seed", "video-s2=2"]
    result = compare.main(argv)
    assert result["header"] == ["Dataset", "Words (Millions)", "video+text", "video+text_sd", "video+text_n"]
    assert result["rows"][0][:4] == ["blimp_fast", "1", "68", f"{math.sqrt(8):.4g}"]


def test_bad_inputs_are_one_line(runs, tmp_path):
    text1, _, video = runs
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "cmp")
    cases = {
        (video, "--out", out): f"error: RUN {video}: its condition is not recorded (run.json); give --condition video-s1=NAME",
        (text1, text1, "--out", out): "are both condition text with seed 1: give each its --seed RUN=N",
        (str(empty), "--out", out): f"error: RUN {empty}: no evaluated checkpoint (run python -m llava.eval.curves {empty} first)",
        (text1, "--out", out, "--seed", "3"): "error: --seed 3: expected RUN=VALUE",
    }  # fmt: skip
    for argv, said in cases.items():
        ended = run_cli(compare.cli, list(argv))
        assert ended.returncode != 0 and said in ended.stderr and len(ended.stderr.strip().splitlines()) == 1, argv
