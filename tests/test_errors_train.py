"""How training fails: every expected failure is one line `error: WHAT (WHERE)` and a non-zero status, found
before any model is loaded where it can be; a run that trained ends its log with a one-line summary.

Each case runs the real entry point on conftest's tiny assets (a GPT-2 of a few layers, a tiny DINOv2, eight
short clips) and asserts the exact output and status. A failure found before any process group or DeepSpeed
starts runs train's (or the preflight's) `cli` in this process with its argv (entry_points.py: the same code
from argument parsing to the error line, without the 4-5 s of imports a new interpreter spends); the
`python -m` wiring, torchrun, DeepSpeed, real training runs and the launcher script run in a fresh process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import pytest

from llava.train import preflight
from llava.train import train as train_module

from entry_points import run_cli_with_process_output
from test_launch_script import LAUNCHING, SCRIPT, clean_env, run_script
from train_helpers import ROOT, flag_tokens, path_flags, train_args

HELP = "python -m llava.train.train --help lists the flags"
SAMPLE = {
    "id": "ok",
    "conversations": [{"from": "human", "value": "Descrivi."}, {"from": "gpt", "value": "un cerchio"}],
}


def run(module: str, args, env=None, timeout=600) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k != "LLAVA_DEBUG"}
    full_env = {**inherited, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    command = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def train(args, **kwargs) -> subprocess.CompletedProcess:
    return run("llava.train.train", args, **kwargs)


def as_python_m_runs_it(cli):
    """`cli` with what the interpreter adds around it: an exception that leaves it (a bug, or anything with
    LLAVA_DEBUG=1) is printed as its traceback on stderr, status 1. torch's @record on train's cli enables
    faulthandler on sys.stderr, which here is a captured stream without a file descriptor: the warning that
    it could not is this capture's, not the command's (a real stderr has one)."""

    def run():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unable to enable fault handler", category=UserWarning)
            try:
                return cli()
            except Exception as e:  # noqa: BLE001 - what `python -m` does with it
                traceback.print_exception(e)
                return 1

    return run


@pytest.fixture
def train_here(monkeypatch):
    """Runs train's cli in this process, as `train` runs it in a new one (same working folder, no
    LLAVA_DEBUG unless `env` sets it). Only for failures found before a process group or DeepSpeed
    starts: cli ends the whole process (os._exit) after a run that started one."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("LLAVA_DEBUG", raising=False)

    def run_here(args, env=None, cli=train_module.cli):
        args = list(map(str, args))
        assert not any(a.startswith("--deepspeed") for a in args), "DeepSpeed runs go through a new process"
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        return run_cli_with_process_output(as_python_m_runs_it(cli), args)

    return run_here


def text_args(assets, data, out) -> list[str]:
    """The command line of a text-only run: no tower, no clips (what most checks need)."""
    return [
        "--model_name_or_path",
        assets["gpt2"],
        "--data_path",
        str(data),
        "--output_dir",
        str(out),
        "--max_steps",
        "1",
    ]


def assert_one_error(result, message: str, status: int = 1) -> None:
    """Exactly `error: message` on stderr, nothing else anywhere, and the status (of a CompletedProcess, or
    of entry_points' Ended: the same three fields)."""
    assert (result.returncode, result.stderr, result.stdout) == (status, f"error: {message}\n", ""), result.stderr[
        -3000:
    ]


# ------------------------------------------------------------------------------------------- data files
@pytest.mark.parametrize(
    "name, text, message",
    [
        ("empty.json", "", "the data file is empty ({path})"),
        ("blank.jsonl", "\n  \n", "the data file is empty ({path})"),
        ("empty_list.json", "[]\n", "the data file holds an empty list: no samples ({path})"),
        # a copy cut inside the second sample's key, and one cut right after the first sample
        (
            "cut.json",
            '[{"id": "a", "conversations": []},\n {"id": "b", "conv',
            "the JSON list is cut short: the file ends inside it (unterminated string) ({path}:2:14)",
        ),
        (
            "cut_between.json",
            '[{"id": "a", "conversations": []},\n',
            "the JSON list is cut short: the file ends inside it (expecting value) ({path}:2:1)",
        ),
        ("broken.json", '[{"id": "a"} {"id": "b"}]', "not valid JSON: expecting ',' delimiter ({path}:1:14)"),
        (
            "object.json",
            json.dumps({"data": [SAMPLE]}, indent=2),
            "the data file holds one JSON object, not a list of samples: expected a JSON list [{...}, {...}] or JSONL "
            "(one sample object per line) ({path})",
        ),
        ("missing.json", None, "--data_path file does not exist ({path})"),
    ],
)
def test_a_bad_data_file_is_one_line_naming_it(assets, tmp_path, train_here, name, text, message):
    data = tmp_path / name
    if text is not None:
        data.write_text(text)
    out = tmp_path / "out"
    result = train_here(text_args(assets, data, out))
    assert_one_error(result, message.replace("{path}", str(data)))
    assert not out.exists(), "nothing is written before the checks pass"


def test_every_problem_of_the_data_is_listed_in_one_line(assets, tmp_path, train_here):
    data = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(SAMPLE),
        "{'id': 'single quotes'}",
        json.dumps([SAMPLE]),
        json.dumps({"id": "c"}),
        json.dumps(
            {"id": "d", "conversations": [{"from": "human", "value": "<video>"}, {"from": "gpt", "value": "x"}]}
        ),
        json.dumps({"id": "e", "video": "a.mp4", "image": "b.png", "conversations": SAMPLE["conversations"]}),
    ]
    data.write_text("\n".join(lines) + "\n")
    result = train_here(text_args(assets, data, tmp_path / "out"))
    assert_one_error(
        result,
        (
            f"5 problems in {data}: line 2 column 2: not JSON: expecting property name enclosed in double quotes; "
            "line 3: a JSON list, not a sample object; sample 'c' (mixed.jsonl:4) has no 'conversations' list; "
            "sample 'd' (mixed.jsonl:5) has 1 visual placeholder(s) but no 'video' or 'image'; "
            "sample 'e' (mixed.jsonl:6) has both a video and an image; one visual input per sample"
        ),
    )


def test_problems_past_the_limit_are_counted_and_files_named(assets, tmp_path, train_here):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": f"s{i}"} for i in range(23)]))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    result = train_here(text_args(assets, f"{empty},{bad}", tmp_path / "out"))
    shown = "; ".join(f"sample 's{i}' (bad.json #{i}) has no 'conversations' list" for i in range(19))
    assert_one_error(result, f"24 problems in {empty}, {bad}: empty.json: the data file is empty; {shown}; and 4 more")


# ------------------------------------------------------------------------------------ folders and flags
def test_a_missing_video_folder(assets, tmp_path, train_here):
    missing = tmp_path / "no-videos"
    args = train_args(assets, tmp_path / "out")
    args[args.index("--video_folder") + 1] = str(missing)
    assert_one_error(train_here(args), f"--video_folder folder does not exist ({missing})")


def test_a_video_folder_without_the_clips(assets, tmp_path, train_here):
    elsewhere = tmp_path / "other-videos"
    elsewhere.mkdir()
    args = train_args(assets, tmp_path / "out")
    args[args.index("--video_folder") + 1] = str(elsewhere)
    first = json.loads(Path(assets["train"]).read_text())[0]["video"]
    assert_one_error(
        train_here(args),
        (
            f"none of the first 8 video files of --data_path exist under --video_folder {elsewhere}; "
            f"is it the right folder? ({elsewhere / first})"
        ),
    )


def test_clips_without_a_vision_tower(assets, tmp_path, train_here):
    args = train_args(assets, tmp_path / "out")
    del args[args.index("--vision_tower") : args.index("--vision_tower") + 2]
    assert_one_error(
        train_here(args),
        (
            f"--data_path holds 8 video samples but {assets['gpt2']} has no vision tower: give --vision_tower, "
            f"or train on text-only data ({assets['train']})"
        ),
        status=2,
    )


def test_a_missing_model_folder(assets, tmp_path, train_here):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([SAMPLE]))
    args = text_args(assets, data, tmp_path / "out")
    args[args.index("--model_name_or_path") + 1] = str(tmp_path / "no-model")
    assert_one_error(train_here(args), f"--model_name_or_path folder does not exist ({tmp_path / 'no-model'})")


def test_an_output_dir_that_cannot_be_written(assets, tmp_path, disks, train_here):
    read_only_folder = disks.mount("read-only", read_only=True)
    data = tmp_path / "d.json"
    data.write_text(json.dumps([SAMPLE]))
    out = read_only_folder / "run"
    result = train_here(text_args(assets, data, out))
    assert_one_error(result, f"read-only file system: --output_dir {out} cannot be written ({read_only_folder})")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--bogus", "1"], f"unknown flag --bogus ({HELP})"),
        (["--lerning_rate", "1e-3"], f"unknown flag --lerning_rate (did you mean --learning_rate?) ({HELP})"),
        (["--max_steps", "many"], f"argument --max_steps/--max-steps: invalid int value: 'many' ({HELP})"),
        (
            ["--mm_tunable_parts", "mm_everything"],
            "unknown --mm_tunable_parts ['mm_everything']; choose from mm_vision_tower, "
            "mm_vision_resampler, mm_mlp_adapter, mm_language_model",
        ),
    ],
)
def test_a_wrong_flag_is_one_line_with_status_2(assets, tmp_path, train_here, extra, message):
    data = tmp_path / "d.json"
    data.write_text(json.dumps([SAMPLE]))
    result = train_here(text_args(assets, data, tmp_path / "out") + extra)
    assert_one_error(result, message, status=2)


@pytest.mark.slow
def test_a_missing_deepspeed_config(assets, tmp_path):
    # A new process, as a user runs it: this is also the test of train's `python -m` wiring for a failure.
    data = tmp_path / "d.json"
    data.write_text(json.dumps([SAMPLE]))
    missing = tmp_path / "zero9.json"
    result = train(text_args(assets, data, tmp_path / "out") + ["--deepspeed", str(missing)])
    assert_one_error(result, f"--deepspeed config file does not exist ({missing})")


def test_llava_debug_gives_the_traceback(assets, tmp_path, train_here):
    data = tmp_path / "empty.json"
    data.write_text("")
    result = train_here(text_args(assets, data, tmp_path / "out"), env={"LLAVA_DEBUG": "1"})
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):"), result.stderr[-3000:]
    assert "llava/train/preflight.py" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1] == f"llava.data.files.DataFileError: the data file is empty ({data})"


@pytest.mark.slow
def test_the_preflight_alone_says_ok(assets, tmp_path, train_here):
    out = tmp_path / "out"
    # `python -m llava.train.preflight` itself (its wiring; the launcher runs it so), then its cli here
    result = run("llava.train.preflight", train_args(assets, out) + ["--deepspeed", "scripts/zero2.json"])
    assert (result.returncode, result.stderr) == (0, ""), result.stderr[-3000:]
    assert result.stdout == (
        f"ok: 8 samples (8 video, 0 image, 0 text-only) in {assets['train']}; model {assets['gpt2']} (gpt2); "
        f"{out} can be written\n"
    )
    assert not out.exists()
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert_one_error(train_here(text_args(assets, empty, out), cli=preflight.main), f"the data file is empty ({empty})")


@pytest.mark.slow
@pytest.mark.distributed
def test_under_torchrun_a_failure_every_rank_shares_is_said_once(assets, tmp_path):
    data = tmp_path / "empty.json"
    data.write_text("")
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "llava.train.train",
        *text_args(assets, data, tmp_path / "out"),
    ]
    result = subprocess.run(
        launcher,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: the data file is empty ({data})"], result.stderr[-3000:]
    # no rank's traceback (torchrun prints its own summary, naming the failed ranks)
    assert not [line for line in result.stderr.splitlines() if line.lstrip().startswith("File ") and "llava/" in line]


# ------------------------------------------------------------------------------------ the run's last line
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO llava\.train: (.*)$")


def last_log_message(stderr: str) -> str:
    match = LOG_LINE.match(stderr.rstrip("\n").splitlines()[-1])
    assert match, stderr[-3000:]
    return match.group(1)


@pytest.mark.slow
def test_a_finished_run_ends_its_log_with_its_summary(assets, tmp_path):
    out = tmp_path / "out"
    result = train(train_args(assets, out, steps=2))
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_log_message(result.stderr) == f"run finished: 2 steps, no samples skipped, final model in {out}"


@pytest.mark.slow
def test_a_run_that_reaches_max_words_says_so(assets, tmp_path):
    out = tmp_path / "out"
    result = train(train_args(assets, out, "--max_words", "5", steps=6))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = re.fullmatch(
        r"run finished \(--max_words 5 reached: (\d+) words trained\): 1 step, no samples skipped, "
        r"final model in (.*)",
        last_log_message(result.stderr),
    )
    assert summary and int(summary.group(1)) >= 5 and summary.group(2) == str(out), result.stderr[-1000:]


@pytest.mark.slow
def test_a_run_stopped_by_a_signal_names_the_checkpoint_to_resume_from(assets, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "llava.train.train", *train_args(assets, out, "--save_steps", "1", steps=200)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("checkpoint-*/checkpoint_complete")) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 75, stderr[-3000:]
    summary = re.fullmatch(
        r"run stopped by SIGTERM: (\d+) of 200 steps, no samples skipped, "
        r"checkpoint (.*) saved \(the same command resumes from it\)",
        last_log_message(stderr),
    )
    assert summary and summary.group(2) == str(out / f"checkpoint-{summary.group(1)}"), stderr[-1000:]


@pytest.mark.slow
def test_a_run_stopped_by_the_skip_limit_says_why_then_sums_up(assets, tmp_path):
    samples = json.loads(Path(assets["train"]).read_text())
    missing = [{**samples[0], "id": f"gone{i}", "video": f"gone{i}.mp4"} for i in range(2)]
    data = tmp_path / "with_missing.json"
    data.write_text(json.dumps(missing + samples))
    out = tmp_path / "out"
    # a batch of all ten samples: the first step meets both missing clips, 20% of the data, over the 5% allowed
    result = train(train_args(assets, out, "--per_device_train_batch_size", "10", steps=3, data=str(data)))
    assert result.returncode == 1, result.stderr[-3000:]
    *_, error, last = result.stderr.rstrip("\n").splitlines()
    listed = out / "skipped_samples.jsonl"
    assert error == (
        "error: 2 of 10 samples (20.0%) could not be read, more than the allowed 5.0%; fix or remove them, or raise "
        f"the limit (e.g. --max_skip_fraction 0.40) ({listed})"
    )
    assert last_log_message(last + "\n") == (
        "run stopped (more samples could not be read than --max_skip_fraction 0.05 allows): 1 of 3 steps, "
        f"2 samples skipped ({listed}), no checkpoint saved (the same command starts from the beginning)"
    )


# ------------------------------------------------------------------------------------ the launcher script
def script_args(assets, out, **flags) -> list[str]:
    """The launcher's arguments for a run on conftest's tiny assets, without DeepSpeed."""
    return flag_tokens(path_flags(assets), output_dir=out, deepspeed="none", **flags)


@pytest.mark.slow
def test_the_launcher_runs_the_preflight_and_stops_with_its_line(assets, tmp_path):
    data = tmp_path / "cut.json"
    data.write_text('[{"id": "a", "conversations": []},\n')
    out = tmp_path / "out"
    result = run_script(clean_env(NPROC=1), *script_args(assets, out, data_path=data), timeout=300)
    assert (result.returncode, result.stderr) == (
        1,
        f"error: the JSON list is cut short: the file ends inside it (expecting value) ({data}:2:1)\n",
    ), result.stderr[-3000:]
    assert "-m llava.train.launch " in result.stdout  # the command it would have run is shown
    assert not out.exists(), "nothing was launched"


def test_the_launcher_checks_its_own_variables_one_line_each(assets, tmp_path):
    env = clean_env(NPROC="0", REQUEUE="maybe", STOP_TIMEOUT="0")
    result = run_script(env, *script_args(assets, tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "train_italian_video.sh: error: GPUS_PER_NODE/NPROC: '0' is not a positive number of processes",
        "train_italian_video.sh: error: REQUEUE must be 1 (a job told to stop requeues itself) or 0, not 'maybe'",
        "train_italian_video.sh: error: STOP_TIMEOUT: '0' is not a positive number of seconds",
        f"train_italian_video.sh: nothing started (relative paths are taken from {ROOT}); see 'bash train_italian_video.sh --help'",
    ]


@pytest.mark.slow
def test_a_wrong_setting_is_the_preflight_s_line_for_its_flag(assets, tmp_path):
    arguments = script_args(assets, tmp_path / "out", num_frames="eight", learning_rate="fast")
    result = run_script(clean_env(NPROC=1), *arguments, timeout=300)
    assert (result.returncode, result.stderr) == (
        2,
        "error: argument --num_frames/--num-frames: invalid int value: 'eight' (python -m llava.train.train --help lists the flags)\n",
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_the_launcher_help(flag):
    """The usage: flags after the script's name, the recipe they override, the launching variables; shown
    even to a shell that still holds a retired variable (which would otherwise stop the script)."""
    env = {**os.environ, "LM_PATH": "models/bambi"}
    result = subprocess.run(["bash", str(SCRIPT), flag], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (0, "")
    usage = result.stdout
    assert usage.startswith("usage: [VARIABLE=value ...] sbatch|bash train_italian_video.sh [--flag value ...]\n")
    prose = " ".join(usage.split())
    assert (
        "a flag after the script's name wins over the recipe's value (`--config OTHER.yaml` replaces the recipe)"
        in prose
    )
    assert "python -m llava.train.train --help" in prose  # where the settings' flags are listed
    assert "(LM_PATH, OUTPUT_DIR, SAVE_EVERY_MINUTES, ...) stops the script with a line naming the flag" in prose
    for variable in LAUNCHING:
        assert re.search(rf"^  (\S+ \(= |\S+, )?{variable}\b", usage, re.M), variable
    assert re.search(r"^  PREFLIGHT +1: check everything before launching; 0: skip +\[1\]$", usage, re.M)
    # the training settings are flags, no longer variables of the script
    assert not re.search(r"^  (LM_PATH|DATA_PATH|OUTPUT_DIR|NUM_FRAMES) ", usage, re.M) and "set -euo" not in usage
