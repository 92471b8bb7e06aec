"""BabyLM checkpoints by words seen: the schedule, the count, and the checkpoints a run saves."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from llava.constants import IGNORE_INDEX
from llava.train import train
from llava.train.checkpoints import COMPLETE_MARKER
from llava.train.milestones import babylm_milestones, count_words, milestone_label, parse_milestones

from train_helpers import ROOT, run_training, train_args

MILESTONES = "60,130,200,270"


def saved_milestones(out: Path) -> dict[str, int]:
    return {
        p.name: json.loads((p / "word_count.json").read_text())["words"] for p in sorted(out.glob("checkpoint-words-*"))
    }


def test_babylm_schedule_and_labels():
    schedule = babylm_milestones()
    assert schedule[:3] == [1_000_000, 2_000_000, 3_000_000]
    assert schedule[9:12] == [10_000_000, 20_000_000, 30_000_000]
    assert schedule[18:21] == [100_000_000, 200_000_000, 300_000_000]
    assert schedule[-1] == 1_000_000_000 and len(schedule) == 28
    assert [milestone_label(m) for m in (1_000_000, 20_000_000, 1_000_000_000, 1500)] == ["1M", "20M", "1B", "1500"]
    assert parse_milestones(False, "300, 100,1e2") == [100, 300]


def test_words_are_those_of_the_trained_answer_text(assets):
    # `assets`, not `train_assets`: the same tokenizer, from the set the fast tier builds anyway
    tokenizer = AutoTokenizer.from_pretrained(assets["gpt2"])
    answer = tokenizer("un cerchio rosso si muove verso destra").input_ids + [tokenizer.eos_token_id]
    labels = torch.tensor([[IGNORE_INDEX] * 5 + answer, [IGNORE_INDEX] * (len(answer) + 5)])
    assert count_words(labels, tokenizer) == 7


@pytest.mark.slow
def test_run_saves_each_milestone_once_and_stops_at_max_words(train_assets, tmp_path):
    out = tmp_path / "out"
    trainer = train.main(
        train_args(train_assets, out, "--word_milestones", MILESTONES, "--max_words", "270", steps=100)
    )
    saved = saved_milestones(out)
    assert list(saved) == [
        "checkpoint-words-130",
        "checkpoint-words-200",
        "checkpoint-words-270",
        "checkpoint-words-60",
    ]
    for name, words in saved.items():
        milestone = int(name.rsplit("-", 1)[1])
        assert milestone <= words < milestone + 60  # crossed within one step (4 captions of a few words)
    assert trainer.words_seen >= 270 and trainer.state.global_step < 100
    assert (out / "checkpoint-words-60" / "model.safetensors").exists()


@pytest.mark.slow
def test_killed_and_resumed_between_milestones_saves_the_same(train_assets, tmp_path):
    args = lambda out: train_args(train_assets, out, "--word_milestones", MILESTONES, steps=14)  # noqa: E731
    straight = tmp_path / "straight"
    assert run_training(args(straight)).returncode == 0
    expected = saved_milestones(straight)
    assert len(expected) == 4

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "llava.train.train", *args(killed)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    # kill once the first milestone is saved and a regular checkpoint after it is complete
    while time.time() < deadline:
        done = [int(p.parent.name.split("-")[1]) for p in killed.glob(f"checkpoint-*/{COMPLETE_MARKER}")]
        if (killed / "checkpoint-words-60").exists() and done and max(done) >= 4:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    assert len(saved_milestones(killed)) < 4
    result = run_training(args(killed))
    assert result.returncode == 0, result.stderr[-3000:]
    assert saved_milestones(killed) == expected
