"""BabyLM learning curves: minimal pairs scored through lm-eval, every milestone of a tiny run evaluated,
the results file, its resumption, the plot and the table."""

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.demo.synthetic import save_gpt2
from llava.eval import curves, minimal_pairs
from llava.train import train

from entry_points import run_cli
from train_helpers import ROOT, train_args

PAIRS = [
    ("un cerchio rosso si muove verso destra", "un cerchio rossa si muove verso destra", "gender"),
    ("c'è un quadrato verde che va verso sinistra", "c'è un verde quadrato che va verso sinistra", "order"),
    ("verso l'alto si sposta un triangolo giallo", "verso l'alto si sposta un triangolo gialla", "gender"),
    (
        "il video mostra un cerchio blu diretto verso il basso",
        "il video mostra cerchio un blu diretto verso il basso",
        "order",
    ),
]


def write_pairs(path: Path, pairs=PAIRS) -> str:
    path.write_text(
        "".join(json.dumps({"sentence_good": g, "sentence_bad": b, "group": k}) + "\n" for g, b, k in pairs)
    )
    return str(path)


@torch.no_grad()
def sentence_logprob(model, tokenizer, sentence: str) -> float:
    """By hand: log P(sentence) after the end-of-text token, the sentence as lm-eval's multiple choice
    continues an empty context (after its one-space target delimiter)."""
    ids = [tokenizer.eos_token_id] + tokenizer(" " + sentence).input_ids
    logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return float(logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).sum())


@pytest.mark.slow
def test_pair_scores_are_the_hand_computed_log_probabilities(tmp_path, tokenizer_dir):
    model_dir = save_gpt2(tmp_path / "gpt2", tokenizer_dir, n_layer=2, n_embd=32, n_head=2, dropout=0.0, seed=3)
    result = minimal_pairs.evaluate(model_dir, [write_pairs(tmp_path / "pairs.jsonl")], batch_size=3)

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert [(p["line"], p["group"]) for p in result["per_pair"]] == [(i + 1, k) for i, (_, _, k) in enumerate(PAIRS)]
    right = []
    for pair, (good, bad, _) in zip(result["per_pair"], PAIRS):
        expected_good, expected_bad = sentence_logprob(model, tokenizer, good), sentence_logprob(model, tokenizer, bad)
        assert pair["logprob_good"] == pytest.approx(expected_good, abs=1e-4)
        assert pair["logprob_bad"] == pytest.approx(expected_bad, abs=1e-4)
        assert pair["logprob_good"] - pair["logprob_bad"] == pytest.approx(expected_good - expected_bad, abs=2e-4)
        assert pair["right"] == (expected_good > expected_bad)
        right.append(expected_good > expected_bad)
    assert result["accuracy"] == sum(right) / len(PAIRS)
    assert result["files"] == {"pairs": {"accuracy": result["accuracy"], "pairs": 4}}
    by_group = {k: [r for r, (_, _, g) in zip(right, PAIRS) if g == k] for k in ("gender", "order")}
    assert result["groups"] == {k: {"accuracy": sum(v) / len(v), "pairs": len(v)} for k, v in by_group.items()}


@pytest.fixture(scope="module")
def milestone_run(train_assets, tmp_path_factory):
    """A tiny video run that saves two word milestones and its final model."""
    out = tmp_path_factory.mktemp("curves_run") / "out"
    train.main(train_args(train_assets, out, "--word_milestones", "40,120", "--save_steps", "100", steps=8))
    return out


def rows_by_checkpoint(rows):
    found = {}
    for row in rows:
        found.setdefault((row["checkpoint"], row["suite"]), []).append(row)
    return found


@pytest.mark.slow
def test_every_milestone_and_the_final_model_evaluated_then_resumed(milestone_run, train_assets, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    argv = [str(milestone_run), "--minimal-pairs", pairs, "--captions", train_assets["val"]]
    argv += ["--video-folder", train_assets["video_folder"], "--device", "cpu"]
    result = curves.main(argv)

    names = ["checkpoint-words-40", "checkpoint-words-120", "final"]
    assert result["evaluated"] == names
    words = {c.name: c.words for c in curves.run_checkpoints(str(milestone_run))}
    assert (
        list(words) == names and words["checkpoint-words-40"] >= 40 and words["final"] > words["checkpoint-words-120"]
    )
    found = rows_by_checkpoint(result["rows"])
    assert sorted(found) == sorted((n, s) for n in names for s in ("grammar", "captions"))
    for name in names:
        grammar = {r["group"]: r for r in found[(name, "grammar")]}
        assert set(grammar) == {None, "gender", "order"}
        assert grammar[None]["n"] == 4 and grammar[None]["chance"] == 0.5 and 0 <= grammar[None]["value"] <= 1
        assert grammar[None]["value"] == (grammar["gender"]["value"] + grammar["order"]["value"]) / 2
        captions = {r["measure"]: r for r in found[(name, "captions")]}
        assert set(captions) == {"caption_loss", "grounding_gap", "cider"}
        assert captions["caption_loss"]["value"] > 0 and captions["grounding_gap"]["chance"] == 0.0
        assert all(r["words"] == words[name] for r in found[(name, "grammar")] + found[(name, "captions")])
    on_disk = [json.loads(line) for line in (milestone_run / "curves.jsonl").read_text().splitlines()]
    assert on_disk == result["rows"]

    png = milestone_run / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["words", "checkpoint", "grammar"]
    for name in names:
        assert f"{words[name]:,}" in table and name in table

    # Again: nothing is left to evaluate, nothing is added.
    assert curves.main(argv)["evaluated"] == []
    assert (milestone_run / "curves.jsonl").read_text().splitlines() == [
        json.dumps(r, ensure_ascii=False) for r in on_disk
    ]

    # An evaluator stopped while writing the final model's rows: its captions suite is gone and half a
    # line is left. The next one evaluates only what is missing, and leaves the half line out.
    kept = [r for r in on_disk if not (r["checkpoint"] == "final" and r["suite"] == "captions")]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    (milestone_run / "curves.jsonl").write_text(text + '{"checkpoint": "final", "wor')
    resumed = curves.main(argv)
    assert resumed["evaluated"] == ["final"]
    again = rows_by_checkpoint(resumed["rows"])
    assert sorted(again) == sorted(found) and all(len(again[k]) == len(found[k]) for k in found)

    # A new pairs file is a new suite for every checkpoint.
    other = write_pairs(tmp_path / "more.jsonl", PAIRS[:2])
    redone = curves.main([str(milestone_run), "--minimal-pairs", other, "--device", "cpu", "--no-plot"])
    assert redone["evaluated"] == names


@pytest.mark.slow
def test_babylm_tasks_at_every_milestone_as_the_pipeline_scores_them(milestone_run, tmp_path, capsys):
    """--babylm scores each checkpoint as `python -m llava.eval.babylm zero_shot` scores it alone, and
    writes the pipeline's files under the revision names collate_preds reads."""
    import shutil
    from unittest.mock import ANY

    from llava.data.run_record import read_run_record
    from llava.eval.babylm import zero_shot

    from babylm_helpers import write_task_folders

    run = tmp_path / "run-video-seed1"
    shutil.copytree(milestone_run, run, ignore=shutil.ignore_patterns("curves.*"))
    # what the run recorded of itself when it started, for llava.eval.compare
    assert read_run_record(str(run)) == {
        "condition": "video+text", "seed": 0, "model_name_or_path": ANY, "vision_tower": ANY,
        "data_path": ANY, "max_words": None,
    }  # fmt: skip
    folders = write_task_folders(tmp_path / "data")
    specs = [f"blimp={folders['blimp']}", f"wug_adj={folders['wug_adj']}"]
    result = curves.main([str(run), "--babylm", *specs, "--device", "cpu", "--no-plot"])
    revisions = {"checkpoint-words-40": "words_40", "checkpoint-words-120": "words_120", "final": "main"}
    assert result["evaluated"] == list(revisions)
    rows = {(r["checkpoint"], r["measure"]): r for r in result["rows"]}
    assert len(rows) == 6 and {r["suite"] for r in rows.values()} == {"babylm"}
    for checkpoint, revision in revisions.items():
        path = str(run if checkpoint == "final" else run / checkpoint)
        for task, chance in (("blimp", 50.0), ("wug_adj", 0.0)):
            stem = folders[task].name
            row = rows[(checkpoint, f"babylm:{task}:{stem}")]
            alone = zero_shot.main(["--model_path_or_name", path, "--backend", "causal", "--task", task,
                                    "--data_path", str(folders[task]), "--output_dir", str(tmp_path / "alone")])  # fmt: skip
            assert row["value"] == alone["average"] and row["chance"] == chance
            written = run / "babylm_results" / run.name / revision / "zero_shot" / "causal" / task / stem
            assert (written / "predictions.json").is_file()
            assert (written / "best_temperature_report.txt").read_text() == Path(alone["report"]).read_text()
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["words", "checkpoint", folders["blimp"].name, folders["wug_adj"].name]
    # again: nothing left to do
    assert curves.main([str(run), "--babylm", *specs, "--device", "cpu", "--no-plot"])["evaluated"] == []


@pytest.mark.slow
def test_reading_and_devbench_at_every_milestone_as_their_commands_score_them(milestone_run, tmp_path):
    """--babylm reading=CSV and devbench=DIR: each checkpoint's scores as `llava.eval.babylm reading` and
    `devbench` give them alone (DevBench's accuracies in percent), their files where the pipeline writes
    them."""
    import shutil

    from llava.errors import UsageError
    from llava.eval.babylm import devbench, reading

    from babylm_helpers import write_devbench, write_reading

    run = tmp_path / "run"
    shutil.copytree(milestone_run, run, ignore=shutil.ignore_patterns("curves.*"))
    data, pictures = write_reading(tmp_path / "reading.csv", rows=30), write_devbench(tmp_path / "devbench", things=5)
    specs = [f"reading={data}", f"devbench={pictures}"]
    result = curves.main([str(run), "--babylm", *specs, "--device", "cpu", "--no-plot", "--checkpoint", "final"])
    rows = {r["measure"]: r for r in result["rows"]}
    alone = reading.main(["--model_path_or_name", str(run), "--backend", "causal", "--data_path", str(data),
                          "--output_dir", str(tmp_path / "alone")])  # fmt: skip
    assert rows["babylm:reading:eye_tracking"]["value"] == alone["eye_tracking"]
    assert rows["babylm:reading:self_paced_reading"]["value"] == alone["self_paced_reading"]
    assert rows["babylm:reading:eye_tracking"]["chance"] == 0.0
    scores = devbench.main(["--model", str(run), "--data_path", str(pictures), "--output_dir", str(tmp_path / "alone")])
    assert rows["babylm:devbench:lex-viz_vocab"]["value"] == 100 * scores["lex-viz_vocab"]
    assert rows["babylm:devbench:gram-trog"]["value"] == 100 * scores["gram-trog"]
    assert rows["babylm:devbench:sem-things"]["value"] == scores["sem-things"]
    assert rows["babylm:devbench:gram-trog"]["chance"] == 25.0
    main = run / "babylm_results" / run.name / "main" / "zero_shot"
    assert (main / "causal" / "reading" / "predictions.json").is_file()
    assert (main / "devbench" / "sem-things_pairwise_sims.npy").is_file()
    with pytest.raises(UsageError, match="--babylm reading=a,b,c: reading takes its data alone"):
        curves.main([str(run), "--babylm", "reading=a,b,c"])


def _job_env(**extra) -> dict:
    """This interpreter for the script, nothing inherited from an allocation, nothing downloaded."""
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    return {**env, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def _copy_of(run, folder):
    import shutil

    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("curves.*"))
    return folder


@pytest.mark.slow
@pytest.mark.slurm
def test_a_slurm_job_array_evaluates_a_run_one_checkpoint_per_task(milestone_run, slurm_cluster, tmp_path):
    """sbatch --array over evaluate_milestones.sh: each task evaluates its checkpoint (two at a time on
    this machine's two CPUs, appending to one curves.jsonl), and a last call finds nothing left and plots."""
    from babylm_helpers import write_task_folders

    run = _copy_of(milestone_run, tmp_path / "run")
    blimp = write_task_folders(tmp_path / "data")["blimp"]
    names = curves.main([str(run), "--list-checkpoints"])["checkpoints"]
    assert names == ["checkpoint-words-40", "checkpoint-words-120", "final"]
    logs = tmp_path / "logs"
    logs.mkdir()
    env = _job_env(SLURM_CONF=slurm_cluster.env["SLURM_CONF"], PATH=slurm_cluster.env["PATH"])
    sbatch = ["sbatch", "--wait", "--parsable", f"--array=0-{len(names) - 1}", f"--output={logs}/task_%a.out"]
    sbatch += ["--cpus-per-task=1", "--time=00:10:00", str(ROOT / "evaluate_milestones.sh"), str(run)]
    sbatch += ["--babylm", f"blimp={blimp}", "--device", "cpu"]
    result = slurm_cluster.run(sbatch, timeout=420, check=False, env=env, cwd=tmp_path)
    task_logs = {p.name: p.read_text(errors="replace") for p in sorted(logs.glob("*.out"))}
    assert result.returncode == 0, (result.stderr, {k: v[-2000:] for k, v in task_logs.items()})
    for index, name in enumerate(names):
        assert f"evaluating {name} " in task_logs[f"task_{index}.out"], task_logs
    rows = curves.read_rows(str(run))
    assert sorted(r["checkpoint"] for r in rows) == sorted(names)
    last = curves.main([str(run), "--babylm", f"blimp={blimp}", "--device", "cpu"])
    assert last["evaluated"] == [] and (run / "curves.png").is_file()


@pytest.mark.slow
def test_without_slurm_the_script_evaluates_every_checkpoint_in_parallel_then_plots(milestone_run, tmp_path):
    import subprocess

    from babylm_helpers import write_task_folders

    run = _copy_of(milestone_run, tmp_path / "run")
    blimp = write_task_folders(tmp_path / "data")["blimp"]
    argv = ["bash", str(ROOT / "evaluate_milestones.sh"), str(run), "--babylm", f"blimp={blimp}", "--device", "cpu"]
    done = subprocess.run(argv, env=_job_env(NPROC="2"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted({r["checkpoint"] for r in curves.read_rows(str(run))}) == sorted(
        curves.main([str(run), "--list-checkpoints"])["checkpoints"]
    )
    assert (run / "curves.png").is_file() and done.stdout.splitlines()[0].split()[:3] == [
        "words",
        "checkpoint",
        "blimp_fast",
    ]
    # one checkpoint by name; an unknown one is one line
    assert curves.main([str(run), "--babylm", f"blimp={blimp}", "--checkpoint", "final"])["evaluated"] == []
    ended = run_cli(curves.cli, [str(run), "--babylm", f"blimp={blimp}", "--checkpoint", "7"])
    assert ended.returncode == 1 and "--checkpoint 7: not one of the run's 3 finished checkpoints" in ended.stderr


def test_curves_refuse_bad_inputs_in_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pairs = tmp_path / "bad.jsonl"
    pairs.write_text('{"sentence_good": "un cerchio rosso"}\nnot json\n{"sentence_good": "a", "sentence_bad": "b"}\n')
    cases = {
        (
            str(run),
        ): "error: nothing to evaluate: give --minimal-pairs FILE_OR_DIR, --babylm TASK=DATA_PATH and/or --captions VAL.json",
        (str(tmp_path / "nowhere"), "--minimal-pairs", str(pairs)): (
            f"error: OUTPUT_DIR: no such folder, expected a training run's --output_dir ({tmp_path / 'nowhere'})"
        ),
        (str(run), "--minimal-pairs", str(tmp_path / "missing.jsonl")): (
            f"error: --minimal-pairs: no such file or folder ({tmp_path / 'missing.jsonl'})"
        ),
        (str(run), "--minimal-pairs", str(pairs)): (
            f"error: 2 problems in {pairs}: line 1: no sentence_bad (a non-empty string); "
            "line 2 column 1: not JSON: expecting value"
        ),
        (str(run), "--minimal-pairs", str(run)): f"error: --minimal-pairs: the folder holds no .jsonl file ({run})",
        (str(run), "--babylm", "blimp"): (
            "error: --babylm blimp: expected TASK=DATA_PATH or TASK=DATA_PATH,IMAGES_PATH,SPLIT"
        ),
        (str(run), "--babylm", f"blimp={run}"): f"error: --data_path {run}: no .jsonl record in the folder",
    }
    for argv, line in cases.items():
        ended = run_cli(curves.cli, list(argv))
        usage = "nothing" in line or "expected TASK" in line
        assert (ended.returncode, ended.stderr.strip()) == (2 if usage else 1, line), argv
    good = tmp_path / "good.jsonl"
    write_pairs(good)
    ended = run_cli(curves.cli, [str(run), "--minimal-pairs", str(good)])
    assert ended.returncode == 1
    assert ended.stderr.strip() == (
        "error: no milestone checkpoint (checkpoint-words-*) or final model with its word_count.json in the "
        f"folder: train with --word_milestones or --babylm_word_milestones ({run})"
    )
    assert not os.path.exists(run / "curves.jsonl")
