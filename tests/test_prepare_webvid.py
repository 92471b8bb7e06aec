"""scripts_italian/prepare_webvid_italian.py on a small annotation file and clips written by the test."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.demo.synthetic import ClipSpec, render_frames, write_clip

from media_helpers import write_broken_inputs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts_italian" / "prepare_webvid_italian.py"


@pytest.fixture
def webvid(tmp_path):
    videos = tmp_path / "videos"
    (videos / "000001_000050").mkdir(parents=True)
    for i, clip_id in enumerate(["1001", "1002", "1003"]):
        write_clip(
            videos / "000001_000050" / f"{clip_id}.mp4",
            render_frames(ClipSpec("rosso", "cerchio", "destra"), 12, 48, seed=i),
        )
    broken = write_broken_inputs(tmp_path / "broken", videos / "000001_000050" / "1001.mp4")
    (videos / "000001_000050" / "1004.mp4").write_bytes(broken["truncated.mp4"].read_bytes())
    (videos / "000001_000050" / "1005.mp4").write_bytes(broken["audio.mp4"].read_bytes())
    rows = [
        {
            "videoid": "1001",
            "caption_it": "Un cerchio rosso si muove.",
            "duration": "PT00H00M12S",
            "page_dir": "000001_000050",
            "contentUrl": "https://example.invalid/1001.mp4",
        },
        {
            "videoid": "1002",
            "caption_it": "Una  palla   rossa rotola",
            "duration": "PT00H00M08S",
            "page_dir": "000001_000050",
            "contentUrl": "",
        },
        {"videoid": "1003", "caption_it": "", "duration": "", "page_dir": "000001_000050", "contentUrl": ""},
        {
            "videoid": "1004",
            "caption_it": "Un file troncato",
            "duration": "",
            "page_dir": "000001_000050",
            "contentUrl": "",
        },
        {"videoid": "1005", "caption_it": "Solo audio", "duration": "", "page_dir": "000001_000050", "contentUrl": ""},
        {
            "videoid": "1006",
            "caption_it": "Mai scaricato",
            "duration": "",
            "page_dir": "000001_000050",
            "contentUrl": "",
        },
    ]
    return tmp_path, videos, rows


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def check_outputs(out):
    video = json.loads((out / "train_video.json").read_text())
    text = json.loads((out / "train_text.json").read_text())
    dropped = {d["id"]: d["reason"] for d in map(json.loads, (out / "dropped.jsonl").read_text().splitlines())}
    assert [s["id"] for s in video] == ["1001", "1002"]
    assert video[0]["video"] == "000001_000050/1001.mp4"
    assert video[1]["conversations"][0]["value"].startswith("<video>")
    assert video[1]["conversations"][1] == {"from": "gpt", "value": "Una palla rossa rotola"}
    assert text == [{"id": s["id"], "conversations": s["conversations"][1:]} for s in video]
    assert dropped["1003"] == "no caption"
    assert dropped["1006"] == "clip file missing"
    assert "1004" in dropped and "1004.mp4" in dropped["1004"]
    assert "no video stream" in dropped["1005"]
    assert len(dropped) == 4


def test_csv_annotations(webvid):
    root, videos, rows = webvid
    with (root / "webvid_it.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = run(
        "--annotations",
        root / "webvid_it.csv",
        "--video-folder",
        videos,
        "--out-dir",
        root / "out",
        "--clip-pattern",
        "{page_dir}/{videoid}.mp4",
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stderr
    check_outputs(root / "out")


def test_jsonl_annotations_with_named_fields(webvid):
    root, videos, rows = webvid
    renamed = [{"clip": r["videoid"], "testo": r["caption_it"], "page_dir": r["page_dir"]} for r in rows]
    (root / "webvid_it.jsonl").write_text("\n".join(json.dumps(r) for r in renamed) + "\n")
    result = run(
        "--annotations",
        root / "webvid_it.jsonl",
        "--video-folder",
        videos,
        "--out-dir",
        root / "out",
        "--id-field",
        "clip",
        "--caption-field",
        "testo",
        "--clip-pattern",
        "{page_dir}/{id}.mp4",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stderr
    check_outputs(root / "out")


def test_unknown_column_is_a_clear_error(webvid):
    root, videos, rows = webvid
    (root / "a.jsonl").write_text(json.dumps({"x": 1}) + "\n")
    result = run("--annotations", root / "a.jsonl", "--video-folder", videos, "--out-dir", root / "out")
    assert result.returncode != 0 and "no id column found" in result.stderr
