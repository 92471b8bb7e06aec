"""Caption evaluation of a tiny trained checkpoint: the JSON and the table, the loss against a hand
computation, the shuffled clips of the grounding gap, and the metrics of the greedy captions."""

import json
import math
from pathlib import Path

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.data.video import read_video_frames
from llava.eval import captions
from llava.eval.metrics import bleu4, cider
from llava.mm_utils import process_video_frames
from llava.model.builder import load_pretrained_model

from train_helpers import make_assets, train_tiny_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"), num_train=8, num_val=5)


@pytest.fixture(scope="module")
def checkpoint(assets, tmp_path_factory):
    return train_tiny_checkpoint(assets, tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def loaded(checkpoint, assets):
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    dataset, items = captions.load_items(model, tokenizer, processor, assets["val"], assets["video_folder"])
    return tokenizer, model, processor, dataset, items


def tokenizer_of(checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


def hand_loss(model, tokenizer, processor, clip_path, caption) -> float:
    """Mean NLL of the caption's tokens and EOS after the visual block, from the model's logits."""
    target = tokenizer(caption, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    pixels = process_video_frames(read_video_frames(clip_path, 8), processor)
    ids = torch.tensor([[IMAGE_TOKEN_INDEX] + target])
    with torch.no_grad():
        logits = model(input_ids=ids, images=[pixels]).logits[0]  # visual block + caption
    predicting = logits[-len(target) - 1 : -1].double().log_softmax(-1)
    return -float(predicting[torch.arange(len(target)), torch.tensor(target)].mean())


def test_command_line_writes_the_json_and_prints_the_table(checkpoint, assets, tmp_path, capsys):
    samples = json.loads(Path(assets["val"]).read_text())
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"")
    samples.append(
        {
            "id": "broken",
            "video": str(broken),
            "conversations": [{"from": "human", "value": "<video>\n"}, {"from": "gpt", "value": "niente"}],
        }
    )
    samples.append(
        {
            "id": "text-only",
            "conversations": [{"from": "human", "value": "ciao"}, {"from": "gpt", "value": "un cerchio rosso"}],
        }
    )
    data = tmp_path / "val.json"
    data.write_text(json.dumps(samples, ensure_ascii=False))
    out = tmp_path / "result.json"
    captions.main(
        [
            "--model-path",
            checkpoint,
            "--data",
            str(data),
            "--video-folder",
            assets["video_folder"],
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--max-new-tokens",
            "6",
        ]
    )
    table = capsys.readouterr().out
    for row in ("caption loss", "perplexity", "loss, shuffled clips", "grounding gap", "BLEU-4", "CIDEr"):
        assert row in table

    result = json.loads(out.read_text())
    for field in (
        "samples",
        "skipped",
        "caption_tokens",
        "loss",
        "perplexity",
        "loss_true_clips",
        "loss_shuffled_clips",
        "grounding_gap",
        "bleu4",
        "cider",
        "captions",
    ):
        assert field in result, field
    assert result["samples"] == 6 and result["visual_samples"] == 5
    assert [s["id"] for s in result["skipped"]] == ["broken"]
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["grounding_gap"] == pytest.approx(result["loss_shuffled_clips"] - result["loss_true_clips"])
    # the gap is measured over the samples with a clip: the text-only one weighs in the loss alone
    entries = result["captions"]
    tokens = {
        e["id"]: len(tokenizer_of(checkpoint)(e["reference"], add_special_tokens=False).input_ids) + 1 for e in entries
    }
    tokens["text-only"] -= 1  # its first token has no context to be predicted from (GPT-2 adds no BOS), as in training
    assert result["caption_tokens"] == sum(tokens.values())
    assert result["loss"] == pytest.approx(sum(e["loss"] * tokens[e["id"]] for e in entries) / sum(tokens.values()))
    visual = [e for e in entries if e["id"] != "text-only"]
    assert result["loss_true_clips"] == pytest.approx(
        sum(e["loss"] * tokens[e["id"]] for e in visual) / sum(tokens[e["id"]] for e in visual)
    )
    assert "clip_from" not in entries[-1]

    ids = [s["id"] for s in samples if s["id"] != "broken"]
    assert [e["id"] for e in entries] == ids
    assert [e["reference"] for e in entries] == [
        s["conversations"][-1]["value"] for s in samples if s["id"] != "broken"
    ]
    entries = visual
    ids = ids[:5]
    # the shuffled loss uses other samples' clips, each clip once
    assert all(e["clip_from"] != e["id"] for e in entries)
    assert sorted(e["clip_from"] for e in entries) == sorted(ids)
    # the corpus metrics are those of the captions listed
    hyps, refs = [e["caption"] for e in result["captions"]], [[e["reference"]] for e in result["captions"]]
    assert result["bleu4"] == pytest.approx(bleu4(hyps, refs))
    assert result["cider"] == pytest.approx(cider(hyps, refs))

    # --json puts the same result on stdout
    captions.main(
        [
            "--model-path",
            checkpoint,
            "--data",
            assets["val"],
            "--video-folder",
            assets["video_folder"],
            "--max-new-tokens",
            "6",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert again["loss"] == pytest.approx(result["loss_true_clips"]) and "grounding gap" in captured.err  # the 5 clips


def test_loss_is_the_mean_nll_of_the_caption_tokens(loaded, assets):
    tokenizer, model, processor, dataset, items = loaded
    sample = dataset.samples[0]
    clip = f"{assets['video_folder']}/{sample['media']}"
    caption = sample["conversations"][-1]["value"]
    expected = hand_loss(model, tokenizer, processor, clip, caption)
    assert captions.caption_loss(model, tokenizer, items[:1]) == pytest.approx(expected, abs=1e-5)

    # over several samples: the token-weighted mean, whatever the batching
    per_sample = [
        hand_loss(
            model, tokenizer, processor, f"{assets['video_folder']}/{s['media']}", s["conversations"][-1]["value"]
        )
        for s in dataset.samples[:3]
    ]
    lengths = [
        len(tokenizer(s["conversations"][-1]["value"], add_special_tokens=False).input_ids) + 1
        for s in dataset.samples[:3]
    ]
    weighted = sum(loss * n for loss, n in zip(per_sample, lengths)) / sum(lengths)
    for batch_size in (1, 2, 3):
        assert captions.caption_loss(model, tokenizer, items[:3], batch_size=batch_size) == pytest.approx(
            weighted, abs=1e-5
        )
    # and it is what training minimizes: the model's own loss on one sample
    batch = captions.DataCollatorForSupervisedDataset(tokenizer)(items[:1])
    batch.pop("skipped")
    with torch.no_grad():
        assert float(model(**batch).loss) == pytest.approx(expected, abs=1e-5)


def test_shuffled_clips_come_from_other_samples(loaded, assets):
    for n in range(2, 40):
        for seed in range(3):
            order = captions.derangement(n, seed)
            assert sorted(order) == list(range(n)) and all(i != j for i, j in enumerate(order))
    with pytest.raises(ValueError):
        captions.derangement(1)

    tokenizer, model, processor, dataset, items = loaded
    order = captions.derangement(len(items), 0)
    shuffled = captions.with_clips_from(items, order)
    for k, (item, j) in enumerate(zip(shuffled, order)):
        assert item["pixel_values"] is items[j]["pixel_values"] and item["input_ids"] is items[k]["input_ids"]
    # the shuffled loss of a sample is its caption scored after the other sample's clip
    sample, donor = dataset.samples[0], dataset.samples[order[0]]
    expected = hand_loss(
        model, tokenizer, processor, f"{assets['video_folder']}/{donor['media']}", sample["conversations"][-1]["value"]
    )
    assert captions.caption_loss(model, tokenizer, shuffled[:1]) == pytest.approx(expected, abs=1e-5)


def test_images_are_letterboxed_where_the_checkpoint_was_trained_so(checkpoint, tmp_path):
    """--image_aspect_ratio pad, recorded in the checkpoint's config, preprocesses the evaluation's images."""
    import numpy as np
    from PIL import Image

    from llava.mm_utils import process_images

    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    model.config.image_aspect_ratio = "pad"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 96, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    data = tmp_path / "images.json"
    data.write_text(
        json.dumps(
            [
                {
                    "id": "wide",
                    "image": "wide.png",
                    "conversations": [{"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": "un quadrato"}],
                }
            ]
        )
    )
    _, items = captions.load_items(model, tokenizer, processor, str(data), image_folder=str(tmp_path))
    with Image.open(tmp_path / "wide.png") as image:
        letterboxed, cropped = process_images([image], processor, model.config), process_images([image], processor)
    assert not torch.equal(letterboxed, cropped)
    assert torch.equal(items[0]["pixel_values"], letterboxed)
