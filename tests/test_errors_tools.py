"""The tools' expected failures, each through the real command: the exact one line `error: WHAT (WHERE)`
on stderr (nothing else there) and the exit status: 2 for a wrong command line, 1 otherwise. Tools:
scripts_italian/prepare_webvid_italian.py, python -m llava.bench, python -m llava.demo.run,
scripts/check_cuda.py, scripts/gpu_check.sh, scripts_italian/test_gpt2_wrapper.py. Read-only and full
folders are real tmpfs mounts.

The commands run in a subprocess, except most of the benchmark's: its interpreter spends more than a
second importing torch before most of its checks, so those run its `main`, wrapped as `python -m llava.bench`
wraps it, in this process (one case keeps the subprocess). The other tools start in a fraction of a
second; the demo's training failure needs its processes."""

import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llava import bench as bench_module
from llava import errors
from llava.bench.assets import build_assets as build_bench_assets
from llava.bench.configs import SHAPES as BENCH_SHAPES

from entry_points import run_cli_with_process_output
from train_helpers import ROOT

PREPARE = ROOT / "scripts_italian" / "prepare_webvid_italian.py"


def run(command, cwd=ROOT, env=None, timeout=300):
    environment = {k: v for k, v in os.environ.items() if k != "LLAVA_DEBUG"}
    return subprocess.run(
        command, cwd=cwd, env={**environment, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def only_line(result) -> str:
    """stderr when it is exactly one line (the error); fails showing stderr otherwise."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def last_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stderr.splitlines()[-1]


# ------------------------------------------------------------------------- prepare_webvid_italian
@pytest.fixture
def webvid(tmp_path):
    """A video folder with two clip files (empty: --no-check only looks for them) and a good CSV."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip_id in ("1001", "1002"):
        (videos / f"{clip_id}.mp4").write_bytes(b"")
    annotations = tmp_path / "webvid_it.csv"
    annotations.write_text("videoid,caption_it\n1001,Un cerchio rosso\n1002,Una palla blu\n")
    return tmp_path, videos, annotations


def prepare(root, annotations, videos, *extra, out=None, env=None):
    out = out if out is not None else root / "out"
    return run(
        [
            sys.executable,
            str(PREPARE),
            "--annotations",
            str(annotations),
            "--video-folder",
            str(videos),
            "--out-dir",
            str(out),
            "--no-check",
            *map(str, extra),
        ],
        env=env,
    )


# name -> (annotation file name, its bytes, the message after "error: " with {path} for the file)
BAD_ANNOTATIONS = {
    "missing": ("absent.csv", None, "annotations file not found ({path})"),
    "not utf-8": (
        "latin1.csv",
        "videoid,caption_it\n1001,perché\n".encode("latin-1"),
        "annotations are not UTF-8 text: byte 0xe9 on line 2 ({path}:2)",
    ),
    "json list cut short": (
        "cut.json",
        b'[{"videoid": "1001", "caption_it": "Un cerchio"},\n{"videoid": "1002", "capt',
        "annotations are not valid JSON: unterminated string starting at column 21 ({path}:2)",
    ),
    "jsonl bad lines": (
        "bad.jsonl",
        b'{"videoid": "1001", "caption_it": "x"}\n[1, 2]\n\n{"videoid": "1002", "capt',
        "2 annotation lines are not JSON objects ({path}:2: a list, not an object; "
        "{path}:4: unterminated string starting at column 21)",
    ),
    "jsonl many bad lines": (
        "many.jsonl",
        b"".join(b"%d\n" % i for i in range(8)),
        "8 annotation lines are not JSON objects ({path}:1: a number, not an object; "
        "{path}:2: a number, not an object; {path}:3: a number, not an object; "
        "{path}:4: a number, not an object; {path}:5: a number, not an object; and 3 more)",
    ),
    "json list of non-objects": (
        "rows.json",
        b'[{"videoid": "1001"}, "1002"]',
        "1 annotation row is not a JSON object ({path} #2: a string, not an object)",
    ),
    "one object over several lines": (
        "object.json",
        b'{\n "videos": []\n}\n',
        "annotations are a single JSON value (an object) over several lines; expected a "
        "JSON list of rows or one JSON object per line ({path})",
    ),
    "csv cut inside a quoted caption": (
        "cut.csv",
        b'videoid,caption_it\n1001,"Un cerchio\n1002,',
        "annotations: the file ends inside a quoted field ({path}:2)",
    ),
    "csv rows of the wrong width": (
        "width.csv",
        b"videoid,caption_it\n1001,Un cerchio, rosso\n1002\n1003,ok\n",
        "2 CSV rows do not have the header's 2 fields ({path}:2: 3 fields; {path}:3: 1 field)",
    ),
    "empty file": ("empty.csv", b"", "annotations hold no rows ({path})"),
    "header only": ("header.csv", b"videoid,caption_it\n", "annotations hold no rows ({path})"),
    "no id column": (
        "noid.jsonl",
        b'{"clip": "1001", "caption_it": "x"}\n',
        "no id column found among videoid, video_id, id, clip_id; name it with --id-field "
        "({path}; columns: clip, caption_it)",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_ANNOTATIONS))
def test_prepare_webvid_names_a_bad_annotation_file_in_one_line(webvid, case):
    root, videos, _ = webvid
    name, content, message = BAD_ANNOTATIONS[case]
    annotations = root / name
    if content is not None:
        annotations.write_bytes(content)
    result = prepare(root, annotations, videos)
    assert only_line(result) == "error: " + message.format(path=annotations)
    assert result.returncode == 1
    assert not (root / "out").exists()  # nothing written


def test_prepare_webvid_annotations_that_are_a_folder(webvid):
    root, videos, _ = webvid
    result = prepare(root, videos, videos)
    assert only_line(result) == f"error: annotations path is a folder, not a CSV or JSONL file ({videos})"
    assert result.returncode == 1


# name -> (extra flags, message, exit status)
BAD_FLAGS = {
    "unknown --id-field": (
        ["--id-field", "clip"],
        "--id-field 'clip' is not a column of the annotations ({annotations}; columns: videoid, caption_it)",
        2,
    ),
    "unknown --caption-field": (
        ["--caption-field", "testo"],
        "--caption-field 'testo' is not a column of the annotations ({annotations}; columns: videoid, caption_it)",
        2,
    ),
    "--clip-pattern field": (
        ["--clip-pattern", "{page_dir}/{id}.mp4"],
        "--clip-pattern '{{page_dir}}/{{id}}.mp4' names "
        "{{page_dir}}, which is not a column of the annotations ({annotations}; columns: videoid, caption_it)",
        2,
    ),
    "--clip-pattern syntax": (
        ["--clip-pattern", "{id.mp4"],
        "--clip-pattern '{{id.mp4' is not a valid pattern: expected '}}' before end of string",
        2,
    ),
    "--clip-pattern positional": (
        ["--clip-pattern", "{}.mp4"],
        "--clip-pattern '{{}}.mp4': every {{}} must name a column, e.g. {{id}} or {{page_dir}}",
        2,
    ),
    "--prompt without <video>": (
        ["--prompt", "Descrivi il video."],
        "--prompt 'Descrivi il video.' has no <video> placeholder",
        2,
    ),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_prepare_webvid_refuses_a_wrong_flag_in_one_line(webvid, case):
    root, videos, annotations = webvid
    extra, message, status = BAD_FLAGS[case]
    result = prepare(root, annotations, videos, *extra)
    assert only_line(result) == "error: " + message.format(annotations=annotations)
    assert result.returncode == status


def test_prepare_webvid_argparse_refuses_a_worker_count_of_zero(webvid):
    root, videos, annotations = webvid
    result = prepare(root, annotations, videos, "--workers", "0")
    assert (
        only_line(result)
        == "error: argument --workers: must be at least 1, got 0 (python scripts_italian/prepare_webvid_italian.py --help lists the flags)"
    )
    assert result.returncode == 2


def test_prepare_webvid_missing_video_folder(webvid):
    root, _, annotations = webvid
    result = prepare(root, annotations, root / "no-videos")
    assert only_line(result) == f"error: video folder not found ({root / 'no-videos'})"
    assert result.returncode == 1


def test_prepare_webvid_out_dir_under_a_file(webvid):
    root, videos, annotations = webvid
    result = prepare(root, annotations, videos, out=annotations / "out")
    assert only_line(result) == f"error: --out-dir {annotations / 'out'} is not a folder ({annotations} is a file)"
    assert result.returncode == 1


def test_prepare_webvid_read_only_out_dir_fails_before_any_clip_is_read(webvid, disks):
    root, videos, annotations = webvid
    read_only = disks.mount("read-only", "1m", read_only=True)
    # no --no-check: the clips (empty files) would be decoded, and dropped, if the check came later
    result = run(
        [
            sys.executable,
            str(PREPARE),
            "--annotations",
            str(annotations),
            "--video-folder",
            str(videos),
            "--out-dir",
            str(read_only / "out"),
        ]
    )
    assert (
        only_line(result)
        == f"error: read-only file system: --out-dir {read_only / 'out'} cannot be written ({read_only})"
    )
    assert result.returncode == 1


def test_prepare_webvid_full_disk_says_so_and_leaves_no_cut_short_file(webvid, disks):
    root, videos, _ = webvid
    rows = [{"videoid": f"{i:04d}", "caption_it": "un cerchio rosso si muove verso destra"} for i in range(200)]
    for row in rows:
        (videos / f"{row['videoid']}.mp4").write_bytes(b"")
    annotations = root / "many.csv"
    with annotations.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["videoid", "caption_it"])
        writer.writeheader()
        writer.writerows(rows)
    disk = disks.mount("small-disk", "4k")
    out = disk / "out"
    result = prepare(root, annotations, videos, out=out)
    pattern = (
        rf"error: no space left on the device saving the prepared annotations "
        rf"\({re.escape(str(out / 'train_video.json'))}: needs about \d+\.\d KB, \d+(\.\d KB| bytes) free\)"
    )
    assert re.fullmatch(pattern, only_line(result)), result.stderr
    assert result.returncode == 1
    assert list(out.iterdir()) == []  # neither the cut-short JSON nor its .partial stays behind


def test_prepare_webvid_that_keeps_no_clip_says_why(webvid):
    root, videos, _ = webvid
    annotations = root / "webvid_it.jsonl"
    annotations.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"videoid": "2001", "caption_it": "mai scaricato"},
                {"videoid": "2002", "caption_it": "mai scaricato"},
                {"videoid": "1001", "caption_it": ""},
            ]
        )
    )
    result = prepare(root, annotations, videos)
    assert only_line(result) == (
        f"error: none of the 3 rows has a usable clip: 2 clip file missing, e.g. {videos / '2001.mp4'}; "
        f"1 no caption (every row and its reason: {root / 'out' / 'dropped.jsonl'})"
    )
    assert result.returncode == 1
    assert len((root / "out" / "dropped.jsonl").read_text().splitlines()) == 3


def test_prepare_webvid_llava_debug_shows_the_traceback(webvid):
    root, videos, _ = webvid
    result = prepare(root, root / "absent.csv", videos, env={"LLAVA_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert (
        result.stderr.splitlines()[-1] == f"llava.errors.InputError: annotations file not found ({root / 'absent.csv'})"
    )


# ----------------------------------------------------------------------------------------- bench
def bench(tmp_path, *extra):
    """`python -m llava.bench ...`, run in this process: the module's main as its __main__ block wraps it
    (without LLAVA_DEBUG, as `run` starts its commands)."""
    with pytest.MonkeyPatch.context() as environment:
        environment.delenv("LLAVA_DEBUG", raising=False)
        return run_cli_with_process_output(
            errors.entry_point(bench_module.main),
            ["--configs", "demo", "--workdir", tmp_path / "work", "--output", tmp_path / "benchmarks.md", *extra],
        )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--configs", "demo,tiny"], "--configs 'demo,tiny': unknown configuration 'tiny' (choose from seed, demo)"),
        (["--device", "gpu"], "--device 'gpu' is not a torch device (e.g. cpu, cuda, cuda:1)"),
    ],
    ids=["configs", "device"],
)
def test_bench_refuses_a_wrong_flag_in_one_line(tmp_path, extra, message):
    result = bench(tmp_path, *extra)
    assert only_line(result) == "error: " + message
    assert result.returncode == 2
    assert not (tmp_path / "work").exists()


def test_bench_cuda_device_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    result = bench(tmp_path, "--device", "cuda")
    build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
    assert (
        only_line(result) == f"error: --device cuda: no CUDA device is available (torch {torch.__version__}, {build})"
    )
    assert result.returncode == 2


@pytest.mark.slow
def test_bench_output_that_is_a_folder(tmp_path):
    """Through `python -m llava.bench` in a subprocess: the module's __main__ wiring."""
    result = run(
        [
            sys.executable,
            "-m",
            "llava.bench",
            "--configs",
            "demo",
            "--workdir",
            str(tmp_path / "work"),
            "--output",
            str(tmp_path),
        ]
    )
    assert only_line(result) == (
        f"error: --output {tmp_path} is a folder; name the table's file, e.g. {tmp_path / 'benchmarks.md'}"
    )
    assert result.returncode == 1


def test_bench_read_only_output_or_workdir_fails_before_any_model_is_built(tmp_path, disks):
    read_only = disks.mount("read-only", "1m", read_only=True)
    result = bench(tmp_path, "--output", str(read_only / "benchmarks.md"))
    assert only_line(result) == (
        f"error: read-only file system: --output {read_only / 'benchmarks.md'} cannot be written ({read_only})"
    )
    assert result.returncode == 1
    assert not (tmp_path / "work").exists()
    result = bench(tmp_path, "--workdir", str(read_only / "work"))
    assert (
        only_line(result)
        == f"error: read-only file system: --workdir {read_only / 'work'} cannot be written ({read_only})"
    )
    assert result.returncode == 1


def test_bench_rebuilds_a_cut_short_assets_record(tmp_path):
    shapes = dataclasses.replace(BENCH_SHAPES["demo"], num_clips=2)
    first = build_bench_assets(shapes, tmp_path)
    record = tmp_path / "demo" / "assets.json"
    record.write_text(record.read_text()[:20])  # cut short (written by an older version, not by rename)
    assert build_bench_assets(shapes, tmp_path) == first
    assert json.loads(record.read_text()) == first
    shutil.rmtree(first["gpt2"])  # the record intact, a model deleted by hand
    assert build_bench_assets(shapes, tmp_path) == first
    assert (Path(first["gpt2"]) / "config.json").is_file()


# ------------------------------------------------------------------------------------------ demo
def demo(*extra, env=None, timeout=300):
    return run([sys.executable, "-m", "llava.demo.run", "--quick", *map(str, extra)], env=env, timeout=timeout)


def test_demo_never_deletes_a_workdir_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("three months of notes\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "data").mkdir()  # a demo name beside the others does not make it a demo run
    result = demo("--workdir", tmp_path)
    assert only_line(result) == (
        f"error: --workdir holds files that no demo run wrote (notes.txt, src); the demo "
        f"empties its workdir before it starts, so name a new folder, an empty one or an "
        f"earlier demo run's ({tmp_path})"
    )
    assert result.returncode == 1
    assert (tmp_path / "notes.txt").read_text() == "three months of notes\n" and (tmp_path / "src").is_dir()


def test_demo_without_the_training_script_says_so_before_any_work(tmp_path, monkeypatch, capsys):
    """An installed package has no train_italian_video.sh beside it; neither has this working folder."""
    from llava.demo import run as demo_run

    monkeypatch.setattr(demo_run, "CHECKOUT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        errors.entry_point(demo_run.main)(["--quick", "--workdir", "demo"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "error: the demo trains through train_italian_video.sh, which comes with the repository, not with the "
        f"installed package: run it from a checkout's root (looked for {tmp_path / 'site-packages' / 'train_italian_video.sh'} "
        f"and {tmp_path / 'train_italian_video.sh'})\n"
    )
    assert not (tmp_path / "demo").exists()


def test_demo_workdir_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    result = demo("--workdir", tmp_path / "file" / "demo")
    assert (
        only_line(result)
        == f"error: --workdir {tmp_path / 'file' / 'demo'} is not a folder ({tmp_path / 'file'} is a file)"
    )
    assert result.returncode == 1


def test_demo_read_only_workdir(disks):
    read_only = disks.mount("read-only", "1m", read_only=True)
    result = demo("--workdir", read_only / "demo")
    assert (
        only_line(result)
        == f"error: read-only file system: --workdir {read_only / 'demo'} cannot be written ({read_only})"
    )
    assert result.returncode == 1


def test_demo_override_that_is_not_a_number(tmp_path):
    result = demo("--workdir", tmp_path / "demo", env={"DEMO_EPOCHS": "twenty"})
    assert only_line(result) == "error: DEMO_EPOCHS='twenty' is not a whole number (it overrides the preset's epochs)"
    assert result.returncode == 2
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_demo_failed_training_is_one_line_after_the_scripts_own_error(tmp_path):
    # Four clips and a tunable part that does not exist: the ranks refuse it at start-up, for real.
    result = demo(
        "--workdir",
        tmp_path / "demo",
        env={"DEMO_NUM_TRAIN": "4", "DEMO_NUM_VAL": "2", "DEMO_TUNABLE_PARTS": "mm_nothing"},
        timeout=600,
    )
    assert result.returncode == 1
    output_dir = tmp_path / "demo" / "checkpoints" / "llava-demo-video"
    assert re.fullmatch(
        rf"error: training failed: train_italian_video\.sh exited with status \d+, its own error is "
        rf"above \({re.escape(str(output_dir))}\)",
        result.stderr.splitlines()[-1],
    ), result.stderr[-3000:]
    assert "--mm_tunable_parts" in result.stderr  # the training's own reason, above


# ------------------------------------------------------------------------- GPU checks, wrapper check
@pytest.mark.slow
def test_check_cuda_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the checks would run")
    result = run([sys.executable, str(ROOT / "scripts" / "check_cuda.py")])
    build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
    assert only_line(result) == f"error: no CUDA device: these checks need a GPU (torch {torch.__version__}, {build})"
    assert result.returncode == 1


def test_gpu_check_without_nvidia_smi():
    if shutil.which("nvidia-smi"):
        pytest.skip("nvidia-smi is here: the GPU checks would run")
    result = run(["bash", "scripts/gpu_check.sh"])
    assert (
        only_line(result)
        == "error: no NVIDIA GPU: nvidia-smi not found; these checks run on a GPU machine (scripts/gpu_check.sh)"
    )
    assert result.returncode == 1


def test_gpu_check_refuses_arguments():
    result = run(["bash", "scripts/gpu_check.sh", "--stages", "zero2"])
    assert (
        only_line(result)
        == "error: gpu_check.sh takes no arguments, got '--stages' (see bash scripts/gpu_check.sh --help)"
    )
    assert result.returncode == 2


def test_wrapper_check_refuses_an_unknown_argument():
    result = run([sys.executable, "scripts_italian/test_gpt2_wrapper.py", "--only", "config"])
    assert (
        only_line(result)
        == "error: unrecognized arguments: --only config (python scripts_italian/test_gpt2_wrapper.py --help lists the flags)"
    )
    assert result.returncode == 2
    assert "PASS" not in result.stdout
