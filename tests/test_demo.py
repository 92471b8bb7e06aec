"""The quick demo end to end (`make demo-quick`'s path): synthetic clips, local tokenizer and models,
DeepSpeed ZeRO-2 with two processes through train_italian_video.sh, evaluation against a blind control."""

import json

import pytest

from llava.demo import run

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_quick_demo_sees_what_the_blind_control_cannot(tmp_path):
    results = run.main(["--quick", "--workdir", str(tmp_path / "demo")])
    video, blind, chance = results["video"], results["blind"], results["chance"]
    # the same model, given another sample's clip, is much less sure of the captions
    assert video["loss"] < 0.8 * blind["loss"], (video["loss"], blind["loss"])
    assert video["accuracy"]["colour"] >= 0.9 and blind["accuracy"]["colour"] <= chance["colour"] + 0.25
    assert (tmp_path / "demo" / "loss.png").stat().st_size > 0
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(saved["video"]["captions"]) == run.PRESETS["quick"].num_val
