"""The quick demo end to end (`make demo-quick`'s path): synthetic clips, local tokenizer and models,
DeepSpeed ZeRO-2 with two processes through train_italian_video.sh, evaluation against a blind control,
the learning curve of its word milestones (minimal pairs through lm-eval, validation captions, the
BabyLM-format tasks as the 2025 pipeline scores them), and a text-only run of the same words beside it."""

import json

import pytest

from llava.demo import run

pytestmark = [pytest.mark.slow, pytest.mark.distributed]


def test_quick_demo_sees_what_the_blind_control_cannot_and_learns_agreement(tmp_path):
    results = run.main(["--quick", "--workdir", str(tmp_path / "demo")])
    video, blind, chance = results["video"], results["blind"], results["chance"]
    # the same model, given another sample's clip, is much less sure of the captions
    assert video["loss"] < 0.8 * blind["loss"], (video["loss"], blind["loss"])
    assert video["accuracy"]["colour"] >= 0.9 and blind["accuracy"]["colour"] <= chance["colour"] + 0.25
    assert (tmp_path / "demo" / "loss.png").stat().st_size > 0
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(saved["video"]["captions"]) == run.PRESETS["quick"].num_val

    # the curve: each milestone and the final model, on the grammar and on the captions
    rows = saved["curve"]["rows"]
    milestones = [f"checkpoint-words-{m}" for m in run.PRESETS["quick"].word_milestones.split(",")]
    overall = {(r["checkpoint"], r["measure"]): r for r in rows if r["group"] is None}
    for checkpoint in [*milestones, "final"]:
        for measure in ("grammar", "caption_loss", "grounding_gap", "cider"):
            assert (checkpoint, measure) in overall, (checkpoint, measure)
    groups = {r["group"] for r in rows if r["measure"] == "grammar"}
    assert groups == {None, "gender agreement", "number agreement", "word order"}
    # agreement learned: 99-100% at the end in every run measured (three seeds), 41-49% after one step
    final = overall[("final", "grammar")]
    assert final["value"] >= final["chance"] + 0.3 and final["n"] == 300, final
    assert (tmp_path / "demo" / "curves.png").stat().st_size > 0

    # the text condition on the same words, and both side by side
    comparison = saved["comparison"]
    assert comparison["header"] == ["Dataset", "Words (Millions)", "video+text", "text"]
    datasets = {row[0] for row in comparison["rows"]}
    assert {"grammar", "blimp_it", "ewok_it", "winoground_it", "vqa_it"} <= datasets
    captions_only = {"caption loss", "grounding gap", "CIDEr-D"}  # the video model's alone
    assert all(row[2] != "" and row[3] != "" for row in comparison["rows"] if row[0] not in captions_only)
    text_rows = {(r["checkpoint"], r["measure"]): r for r in saved["text_curve"]["rows"]}
    assert text_rows[("final", "babylm:vqa:vqa_it")]["pictures"] is False  # a text model reads the question alone
    assert overall[("final", "babylm:vqa:vqa_it")]["pictures"] is True
    results_dir = tmp_path / "demo" / "checkpoints" / "llava-demo-video" / "babylm_results" / "llava-demo-video"
    assert (
        results_dir / "main" / "zero_shot" / "causal" / "winoground" / "winoground_it" / "predictions.json"
    ).is_file()
    assert (tmp_path / "demo" / "comparison" / "comparison.csv").is_file()
