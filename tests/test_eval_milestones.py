"""--eval_milestones: each word-milestone checkpoint evaluated by a detached evaluator as soon as it is
saved, the final model after the training, what is left by the foreground command that
train_italian_video.sh runs at the end; wrong evaluation arguments refused before anything trains."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.train import milestone_eval, preflight, train
from llava.train.milestone_eval import CURVES_LOG, evaluator_environment

from entry_points import run_cli
from test_launch_script import REPO, clean_env, fake_python, run_script
from train_helpers import flag_tokens, train_args

PAIRS = [
    ("un cerchio rosso si muove verso destra", "un cerchio rossa si muove verso destra"),
    ("c'è un quadrato verde che va verso sinistra", "c'è un verde quadrato che va verso sinistra"),
]


def write_pairs(path: Path) -> str:
    path.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b}) + "\n" for g, b in PAIRS))
    return str(path)


@pytest.mark.slow
def test_milestones_are_evaluated_beside_training_and_the_rest_in_the_foreground(train_assets, tmp_path, monkeypatch):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    out = tmp_path / "out"
    curves_args = f"--minimal-pairs {pairs} --device cpu --no-plot"
    # As under torchrun: the evaluators must not see the rank's variables (they would join its group).
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_PORT", "29500")
    # At the lowest priority (the benchmark's subject: python -m llava.bench --eval-milestones) they would
    # wait for whatever else keeps the CPUs busy, such as the other workers of a parallel test run.
    monkeypatch.setattr(milestone_eval, "LOWEST_PRIORITY", 0)
    assert "RANK" not in evaluator_environment() and "MASTER_PORT" not in evaluator_environment()
    trainer = train.main(
        train_args(
            train_assets,
            out,
            "--word_milestones",
            "40,120",
            "--save_steps",
            "100",
            "--eval_milestones",
            curves_args,
            steps=8,
        )
    )
    started = trainer.evaluators.running
    # two milestones, then the final model: an evaluator each, unless two were alive (one waiting for its turn)
    assert 2 <= trainer.evaluators.started <= 3
    assert json.loads((out / "word_count.json").read_text())["words"] == trainer.words_seen
    for process in started:
        assert process.wait(timeout=300) == 0  # detached, never waited for by training: the test waits
    trainer.evaluators.reap()
    assert trainer.evaluators.running == []

    log = (out / CURVES_LOG).read_text()
    # A line of the training per save, and what the evaluators printed: they ran, not only the one below.
    assert [line.split(" saved:")[0].split(" ", 3)[-1] for line in log.splitlines() if line.startswith("===")] == [
        "checkpoint-words-40",
        "checkpoint-words-120",
        "the final model",
    ]
    # Each milestone's evaluator was started once its save was complete, so the background evaluated
    # both; the final model too, unless it was saved in the instant the last evaluator was leaving (then
    # it is left to the foreground step below, as a milestone whose evaluator a SLURM step ended would be).
    for name in ("checkpoint-words-40", "checkpoint-words-120"):
        assert f"evaluating {name} (" in log, log

    # The launcher's foreground step: it evaluates what is left and prints the table.
    done = subprocess.run(
        [sys.executable, "-m", "llava.train.milestone_eval", str(out), curves_args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluating checkpoint-words-" not in done.stderr
    rows = [json.loads(line) for line in (out / "curves.jsonl").read_text().splitlines()]
    overall = {r["checkpoint"]: r for r in rows if r["suite"] == "grammar" and r["group"] is None}
    assert sorted(overall) == ["checkpoint-words-120", "checkpoint-words-40", "final"]
    assert all(r["n"] == len(PAIRS) for r in overall.values())
    assert overall["final"]["words"] == trainer.words_seen
    for name in overall:
        assert name in done.stdout


def test_evaluating_milestones_needs_milestones(dummy_paths, tmp_path):
    pairs = write_pairs(tmp_path / "p.jsonl")
    argv = flag_tokens(dummy_paths.video, output_dir=tmp_path / "out", eval_milestones=f"--minimal-pairs {pairs}")
    ended = run_cli(preflight.main, argv)
    assert (ended.returncode, ended.stderr) == (
        2,
        "error: --eval_milestones evaluates the word-milestone checkpoints, but this run saves none: "
        "give --word_milestones or --babylm_word_milestones\n",
    )
    assert run_cli(preflight.main, [*argv, "--word_milestones", "100"]).returncode == 0


@pytest.mark.slow
def test_a_wrong_evaluation_path_fails_before_training_in_the_one_line(dummy_paths, tmp_path):
    """Through the launcher: its preflight names the evaluation's wrong path beside the training's own."""
    exe, record = fake_python(tmp_path, checks=True)
    missing = tmp_path / "no-pairs.jsonl"
    flags = {"video_folder": tmp_path / "no-videos", "eval_milestones": f"--minimal-pairs {missing}"}
    arguments = flag_tokens(dummy_paths.video, flags, output_dir=tmp_path / "out", word_milestones=100)
    wrong = run_script(clean_env(PYTHON=exe), *arguments, timeout=60)
    assert (wrong.returncode, wrong.stderr) == (
        1,
        f"error: --minimal-pairs: no such file or folder ({missing}); "
        f"--video_folder folder does not exist ({tmp_path / 'no-videos'})\n",
    )
    assert not record.exists(), "training was launched despite the error"


def calls(record: Path) -> list[tuple[str, list[str]]]:
    """The stand-in python's calls, in order: (module, its arguments), a module named after each `-m`
    (torchrun's command holds the training's)."""
    lines = record.read_text().splitlines()
    starts = [i + 1 for i, line in enumerate(lines) if line == "-m"] + [len(lines) + 1]
    return [(lines[a], lines[a + 1 : b - 1]) for a, b in zip(starts, starts[1:])]


def test_the_launcher_evaluates_after_a_finished_training(dummy_paths, tmp_path):
    """The training (a stand-in here) gets --eval_milestones; once it has finished, the script runs the
    evaluation in the foreground with the same arguments, from the flag or from the recipe."""
    exe, record = fake_python(tmp_path)
    exe.write_text(exe.read_text().replace('> "', '>> "'))  # every call, in order, not only the last
    args = "--minimal-pairs 'my pairs/' --device cpu"
    out = tmp_path / "out"
    env, paths = clean_env(PYTHON=exe), flag_tokens(dummy_paths.video, output_dir=out)
    result = run_script(env, *paths, "--eval_milestones", args, timeout=30)
    assert result.returncode == 0, result.stderr
    made = calls(record)
    assert [module for module, _ in made] == [
        "llava.train.preflight",
        "llava.train.launch",
        "llava.train.train",
        "llava.train.milestone_eval",
    ]
    training = made[2][1]
    assert training[training.index("--eval_milestones") + 1] == args
    assert made[3][1] == [str(out), args]
    assert f"EVAL_MILESTONES        {args}" in result.stdout

    recipe = tmp_path / "curves.yaml"
    recipe.write_text(f"base: {REPO / 'recipes' / 'italian_video.yaml'}\neval_milestones: {args}\n")
    record.unlink()
    assert run_script({**env, "RECIPE": str(recipe)}, *paths, timeout=30).returncode == 0
    assert calls(record)[-1] == ("llava.train.milestone_eval", [str(out), args])

    record.unlink()  # without an evaluation, the script becomes the training as before
    assert run_script(env, *paths, timeout=30).returncode == 0
    assert [module for module, _ in calls(record)] == [
        "llava.train.preflight",
        "llava.train.launch",
        "llava.train.train",
    ]


def test_a_stop_sent_to_the_staying_script_reaches_the_training(dummy_paths, tmp_path):
    """With an evaluation to run after the training, the script no longer becomes torchrun: a SIGTERM sent
    to it is passed on to the training (a stand-in that records it), and a stopped training is not
    evaluated."""
    record = tmp_path / "calls.txt"
    exe = tmp_path / "fake-python"
    exe.write_text(
        f'#!/usr/bin/env bash\nif [[ "$1" == -m && "$2" == llava.train.recipe ]]; then exec "{sys.executable}" "$@"; fi\n'
        f'echo "$2" >> "{record}"\n'
        f'if [[ "$2" == llava.train.launch ]]; then\n'
        f'    trap \'echo "got SIGTERM" >> "{record}"; exit 143\' TERM\n'
        "    while true; do sleep 0.05; done\nfi\n"
    )
    exe.chmod(0o755)
    arguments = flag_tokens(dummy_paths.video, output_dir=tmp_path / "out", eval_milestones="--minimal-pairs p/")
    script = subprocess.Popen(
        ["bash", str(REPO / "train_italian_video.sh"), *arguments],
        env=clean_env(PYTHON=exe),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while "llava.train.launch" not in (record.read_text() if record.exists() else ""):
            assert script.poll() is None and time.monotonic() < deadline, script.communicate()
            time.sleep(0.05)
        script.send_signal(signal.SIGTERM)
        stdout, stderr = script.communicate(timeout=30)
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
    assert script.returncode == 143, stderr
    assert record.read_text().splitlines() == ["llava.train.preflight", "llava.train.launch", "got SIGTERM"]
    assert "train_italian_video.sh: told to stop (SIGTERM)" in stderr


def test_the_foreground_step_first_stops_the_run_s_background_evaluators(tmp_path):
    """At the lowest priority they would keep it waiting for their lock as long as anything else runs."""
    out, other = tmp_path / "out", tmp_path / "other"
    out.mkdir()
    other.mkdir()

    def evaluator(folder, *flags):
        """A process with an evaluator's command line (`python -c` runs the code; the rest is its argv)."""
        code = "import time; time.sleep(300)"
        return subprocess.Popen(
            [sys.executable, "-c", code, "-m", "llava.eval.curves", str(folder), *flags], cwd=tmp_path
        )

    run_s = evaluator("out", "--background", "--minimal-pairs", "p/")  # OUTPUT_DIR relative to its folder
    foreground = evaluator(out, "--minimal-pairs", "p/")
    another_run_s = evaluator(other, "--background")
    try:
        assert milestone_eval.stop_background_evaluators(str(out)) == [run_s.pid]
        assert run_s.wait(timeout=10) == -signal.SIGTERM
        assert foreground.poll() is None and another_run_s.poll() is None
    finally:
        for process in (run_s, foreground, another_run_s):
            process.kill()
            process.wait()
