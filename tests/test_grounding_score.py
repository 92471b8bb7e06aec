"""`python -m llava.eval.grounding score`: predictions files written by the tests, scored as LLaVA-ST scores
them, with values worked out by hand (REC, TVG, STVG, SVG; ELC with java); the JSON written beside the
file; each failure one line (a missing file, a line that is not JSON or not an item of the task, a truth
that is not one, an id twice, no java for ELC)."""

import json
import subprocess
import sys

import pytest

from llava.eval import grounding_captions
from llava.eval.grounding import __main__ as grounding
from llava.eval.grounding.score import TASKS, TRUTH_FIELDS

from entry_points import run_cli
from test_grounding_captions import needs_java


def write_predictions(path, task, rows):
    """rows: (answer, truth) pairs -> a predictions file of `task` with ids q0, q1, ..."""
    lines = [json.dumps({"id": f"q{i}", "task": task, "answer": a, "truth": t}) for i, (a, t) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def score(*args):
    return run_cli(grounding.cli, ["score", *map(str, args)])


def scores_written(path):
    return json.loads(path.with_name(path.stem + ".scores.json").read_text(encoding="utf-8"))


def test_every_task_has_its_truth_fields():
    assert set(TRUTH_FIELDS) == set(TASKS) == {"rec", "tvg", "stvg", "svg", "elc"}


def test_rec_by_hand(tmp_path):
    truth = {"box": [0.0, 0.0, 0.5, 1.0]}
    path = write_predictions(
        tmp_path / "rec.jsonl",
        "rec",
        [
            ("[<WIDTH-000><HEIGHT-000><WIDTH-099><HEIGHT-099>]", truth),  # the whole picture: IoU 0.5
            ("It is [0.0, 0.0, 0.5, 1.0].", truth),  # IoU 1
            ("[<WIDTH-000><HEIGHT-000><WIDTH-050>]", truth),  # three tokens: a miss
            ("somewhere on the left", truth),  # no box: a miss
        ],
    )
    ended = score("--task", "rec", path)
    assert ended.returncode == 0, ended.stderr
    written = scores_written(path)
    assert written["task"] == "rec" and "LLaVA-ST" in written["convention"]
    assert written["scores"] == {"mIoU": pytest.approx(1.5 / 4), "R1@0.5": 50.0, "n": 4, "misses": 2}
    assert "mIoU    0.3750" in ended.stdout and "R1@0.5  50.0000" in ended.stdout
    assert str(path.with_name("rec.scores.json")) in ended.stdout and ended.stderr == ""


def test_tvg_by_hand_in_digits_with_out(tmp_path):
    truth = {"span": [0.2, 0.6]}
    path = write_predictions(
        tmp_path / "tvg.jsonl",
        "tvg",
        [
            ("{0.2,0.6}", truth),  # IoU 1
            ("From {0.4, 0.8}.", truth),  # overlap 0.2 over the hull 0.6: 1/3
            ("{0.6,0.2}", truth),  # end before start: a miss
        ],
    )
    out = tmp_path / "elsewhere" / "tvg.json"
    out.parent.mkdir()
    assert score("--task", "tvg", path, "--out", out).returncode == 0
    scores = json.loads(out.read_text(encoding="utf-8"))["scores"]
    # R1 counts IoU strictly above each threshold, as LLaVA-ST counts TVG
    assert scores == {
        "mIoU": pytest.approx((1 + 1 / 3) / 3),
        "R1@0.3": pytest.approx(200 / 3),
        "R1@0.5": pytest.approx(100 / 3),
        "R1@0.7": pytest.approx(100 / 3),
        "n": 3,
        "misses": 1,
    }


def test_stvg_by_hand_moments_land_on_frames_as_in_llava_st(tmp_path):
    # 11 frames: <TEMP-k> is frame round(k / 99 * 10); <TEMP-010> -> 1, <TEMP-020> -> 2, <TEMP-050> -> 5.
    half = [0.0, 0.0, 0.5, 0.5]
    truth = {"span": [0.1, 0.3], "frames": 11, "boxes": {"1": half, "2": half, "3": half}}
    answer = (
        "During the span of {<TEMP-010><TEMP-030>}, <TEMP-010>: [<WIDTH-000><HEIGHT-000><WIDTH-099><HEIGHT-099>]"
        ", <TEMP-020>: [0.0,0.0,0.5,0.5], <TEMP-050>: [0.0,0.0,0.5,0.5]"
    )
    path = write_predictions(tmp_path / "stvg.jsonl", "stvg", [(answer, truth), ("I cannot tell.", truth)])
    assert score("--task", "stvg", path).returncode == 0
    scores = scores_written(path)["scores"]
    t_iou = (0.3 - 10 / 99) / (30 / 99 - 0.1)  # overlap over hull
    # frame 1: the whole picture against its quarter, IoU 0.25; frame 2: 1; frame 3 true only, frame 5
    # predicted only
    s_iou, v_iou = (0.25 + 1) / 2, (0.25 + 1) / 4
    assert scores["m_tIoU"] == pytest.approx(t_iou / 2)
    assert scores["m_sIoU"] == pytest.approx(s_iou / 2) and scores["m_vIoU"] == pytest.approx(v_iou / 2)
    assert scores["tIoU_R1@0.7"] == 50.0 and scores["sIoU_R1@0.5"] == 50.0 and scores["vIoU_R1@0.3"] == 50.0
    assert scores["vIoU_R1@0.5"] == 0.0
    assert scores["n"] == 2 and scores["misses"] == 2  # the second answer: no span, no tube


def test_svg_in_digits_rounds_moments_as_python_does(tmp_path):
    # 5 frames: moment t is frame round(t * 4); 0.625 -> round(2.5) = 2, Python's (and LLaVA-ST's) rounding.
    box = [0.2, 0.2, 0.6, 0.6]
    truth = {"frames": 5, "boxes": {"0": box, "2": box}}
    answer = "0.0: [0.2,0.2,0.6,0.6], 0.625: [0.2,0.2,0.6,0.6], 0.25: [0.2,0.2,0.6]"
    path = write_predictions(tmp_path / "svg.jsonl", "svg", [(answer, truth)])
    assert score("--task", "svg", path).returncode == 0
    scores = scores_written(path)["scores"]
    # frames 0 and 2 exact; frame 1 predicted with a badly written box: a miss in the union
    assert "m_tIoU" not in scores
    assert scores["m_sIoU"] == pytest.approx(1.0) and scores["m_vIoU"] == pytest.approx(2 / 3)
    assert scores["misses"] == 1


@pytest.mark.slow
def test_elc_with_java_scores_the_captions_cut_from_the_answers(tmp_path):
    needs_java()
    rows = [
        (
            "Ends in <TEMP-050>, a man rides a brown horse. Object bounding box: <TEMP-010>: [...]",
            "A man rides a horse.",
        ),
        ("Ends in 0.30, the dog sleeps on the sofa. 0.1: [0,0,1,1]", {"caption": ["the dog sleeps on a sofa"]}),
        ("", "a cat jumps"),
    ]
    rows = [(a, t if isinstance(t, dict) else {"caption": t}) for a, t in rows]
    path = write_predictions(tmp_path / "elc.jsonl", "elc", rows)
    ended = score("--task", "elc", path)
    assert ended.returncode == 0, ended.stderr
    scores = scores_written(path)["scores"]
    expected = grounding_captions.caption_scores(
        [" a man rides a brown horse", " the dog sleeps on the sofa", ""],
        ["A man rides a horse.", ["the dog sleeps on a sofa"], "a cat jumps"],
    )
    assert scores == {**expected, "n": 3, "empty captions": 1}
    assert ended.stderr == ""  # the PTB tokenizer's report of its speed is caught


def test_elc_without_java_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(grounding_captions.shutil, "which", lambda name: None)
    path = write_predictions(tmp_path / "elc.jsonl", "elc", [("a man", {"caption": "a man"})])
    ended = score("--task", "elc", path)
    assert ended.returncode == 1 and ended.stderr.count("\n") == 1
    assert ended.stderr.startswith("error: java not found on PATH") and "default-jre-headless" in ended.stderr


BOX = [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "lines, message",
    [
        ([""], "no predictions in the file"),
        (['{"id": 1, "task": "rec", "answer": "", "truth": {"box": [0, 0, 1, 1]}}', "{oops"], "line 2: not JSON"),
        (["[1, 2]"], "line 1: not a JSON object"),
        ([{"id": 1, "task": "rec", "answer": ""}], "line 1: no truth (each line holds id, task, answer and truth)"),
        ([{"id": 1, "task": "tvg", "answer": "", "truth": {}}], "line 1: an item of task 'tvg', scored as 'rec'"),
        ([{"id": 1, "task": "rec", "answer": None, "truth": {"box": BOX}}], "line 1: answer is not the generated"),
        ([{"id": 1, "task": "rec", "answer": "", "truth": {"span": [0, 1]}}], "line 1: truth has no box"),
        ([{"id": 1, "task": "rec", "answer": "", "truth": {"box": [0, 0, 2, 2]}}], "line 1: truth.box is not a box"),
        ([{"id": "a", "task": "rec", "answer": "", "truth": {"box": BOX}}] * 2, "line 2: the id 'a' is also on line 1"),
    ],
)
def test_a_bad_predictions_file_is_one_line_naming_the_line(tmp_path, lines, message):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines), encoding="utf-8")
    ended = score("--task", "rec", path)
    assert ended.returncode == 1 and ended.stderr.count("\n") == 1, ended.stderr
    assert ended.stderr.startswith(f"error: {path}") and message in ended.stderr


@pytest.mark.parametrize(
    "truth, message",
    [
        ({"span": [0.1, 0.2], "frames": 0, "boxes": {"0": BOX}}, "truth.frames is not a count of frames"),
        ({"span": [0.1, 0.2], "frames": 4, "boxes": {"4": BOX}}, "truth.boxes has the key '4'"),
        ({"span": [0.1, 0.2], "frames": 4, "boxes": {}}, "truth.boxes is not an object"),
        ({"span": [0.3, 0.2], "frames": 4, "boxes": {"1": BOX}}, "truth.span is not [start, end]"),
        ({"span": [0.1, 0.2], "frames": 4, "boxes": {"1": [0, 0, 1]}}, "truth.boxes['1'] is not a box"),
        ({"span": [0.1, 0.2], "boxes": {"1": BOX}}, "truth has no frames (a stvg truth holds span, frames, boxes)"),
    ],
)
def test_a_bad_stvg_truth_is_named(tmp_path, truth, message):
    path = write_predictions(tmp_path / "p.jsonl", "stvg", [("", truth)])
    ended = score("--task", "stvg", path)
    assert ended.returncode == 1 and message in ended.stderr, ended.stderr


def test_a_file_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"id": 1, "task": "rec", "answer": "\xff"}\n')
    ended = score("--task", "rec", path)
    assert (
        ended.returncode == 1 and ended.stderr == f"error: {path}: not UTF-8 text (a predictions file is JSON lines)\n"
    )


def test_a_missing_file_an_unknown_task_and_an_unknown_command(tmp_path):
    ended = score("--task", "rec", tmp_path / "nothing.jsonl")
    assert ended.returncode == 1
    assert ended.stderr == f"error: PREDICTIONS file does not exist ({tmp_path / 'nothing.jsonl'})\n"
    ended = score("--task", "vqa", tmp_path / "nothing.jsonl")
    assert ended.returncode == 2 and "invalid choice: 'vqa'" in ended.stderr
    ended = run_cli(grounding.cli, ["rank"])
    assert ended.returncode == 2 and ended.stderr == "error: unknown command 'rank' (commands: predict, score)\n"
    ended = run_cli(grounding.cli, [])
    assert ended.returncode == 0 and "score" in ended.stdout


@pytest.mark.slow
def test_as_a_module(tmp_path):
    path = write_predictions(tmp_path / "rec.jsonl", "rec", [("[0,0,1,1]", {"box": BOX})])
    ended = subprocess.run(
        [sys.executable, "-m", "llava.eval.grounding", "score", "--task", "rec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ended.returncode == 0 and ended.stderr == "", ended.stderr
    assert scores_written(path)["scores"]["mIoU"] == 1.0
