"""`python -m llava.eval.grounding predict`: a saved tiny grounding model over a small REC and TVG set, run
in-process through the command's main; the truths are checked by hand, the model made to write known bins
(its saved generation config biases each next token by the one before it, a fixed chain), and `--score`
checked against IoUs computed here."""

import json

import numpy as np
import pytest
from PIL import Image

from llava.data import grounding_tasks
from llava.demo.synthetic import write_clip
from llava.errors import InputError
from llava.eval.grounding.__main__ import main

from test_coordinate_model import grounding_model


def chain_bias(tokenizer, answer: str) -> list:
    """generate's `sequence_bias` (as saved in generation_config.json) that makes a greedy model write
    `answer`, then EOS: its first token is favoured everywhere, each next token more after the one before it.
    (Generation from embeddings starts with no ids, so the first token cannot follow the prompt's last.)"""
    ids = [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    assert len(set(ids)) == len(ids), "a chain of distinct tokens"
    return [[[ids[0]], 1e4], *[[[a, b], 3e4] for a, b in zip(ids, ids[1:])]]


@pytest.fixture(scope="module")
def grounding_set(tmp_path_factory):
    """Two images (REC) and two clips (TVG), with their sets as grounding_tasks writes them."""
    folder = tmp_path_factory.mktemp("set")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(folder / f"{name}.png")
        write_clip(folder / f"{name}.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    rec = [
        grounding_tasks.rec("r1", "the red circle", [0.1, 0.2, 0.5, 0.6], image="a.png"),
        grounding_tasks.rec("r2", "the blue square", [0.25, 0.25, 0.75, 1], image="b.png"),
    ]
    tvg = [
        grounding_tasks.tvg("t1", "the circle moves left", [0.2, 0.6], video="a.mp4"),
        grounding_tasks.tvg("t2", "the square moves up", [0, 0.5], video="b.mp4") | {"truth": {"span": [0.1, 0.3]}},
    ]
    (folder / "rec.json").write_text(json.dumps(rec))
    (folder / "tvg.jsonl").write_text("".join(json.dumps(s) + "\n" for s in tvg))
    return folder


def save_model(model, tokenizer, folder, answer=None):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def coordinate_model(tmp_path_factory, tokenizer_dir, tower_dir):
    model, tokenizer = grounding_model("llava_gpt2", tmp_path_factory.mktemp("model"), tokenizer_dir, tower_dir)
    return model.eval(), tokenizer


def run(model_folder, data, task, out, *extra):
    main(["predict", "--model-path", model_folder, "--data", str(data), "--task", task, "--out", str(out), *extra])
    return [json.loads(line) for line in out.read_text().splitlines()]


def box_iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return width * height / (area - width * height)


def iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def test_rec_answers_in_bins_with_the_truth_of_each_reference_and_their_score(
    coordinate_model, grounding_set, tmp_path, capsys
):
    model, tokenizer = coordinate_model
    # <WIDTH-k> is k / 99: the box [0.1, 0.2, 0.5, 0.6] written to the nearest bins
    written = "[<WIDTH-010><HEIGHT-020><WIDTH-050><HEIGHT-059>]"
    model.generation_config.sequence_bias = chain_bias(tokenizer, written)
    folder = save_model(model, tokenizer, tmp_path / "ckpt")
    lines = run(
        folder,
        grounding_set / "rec.json",
        "rec",
        tmp_path / "rec.jsonl",
        "--image-folder",
        str(grounding_set),
        "--score",
    )
    assert [line["id"] for line in lines] == ["r1", "r2"]
    assert [line["truth"] for line in lines] == [{"box": [0.1, 0.2, 0.5, 0.6]}, {"box": [0.25, 0.25, 0.75, 1.0]}]
    assert all(line["task"] == "rec" and line["answer"].replace(" ", "") == written for line in lines)

    box = [10 / 99, 20 / 99, 50 / 99, 59 / 99]
    ious = [box_iou(box, line["truth"]["box"]) for line in lines]
    scores = json.loads((tmp_path / "rec.scores.json").read_text())["scores"]
    assert scores["mIoU"] == pytest.approx(sum(ious) / 2, abs=1e-6)
    assert "mIoU" in capsys.readouterr().out


def test_tvg_span_truths_and_a_samples_own_truth_win(coordinate_model, grounding_set, tmp_path):
    model, tokenizer = coordinate_model
    written = "{<TEMP-020><TEMP-050>}"
    model.generation_config.sequence_bias = chain_bias(tokenizer, written)
    folder = save_model(model, tokenizer, tmp_path / "ckpt")
    out = tmp_path / "tvg.jsonl"
    lines = run(
        folder, grounding_set / "tvg.jsonl", "tvg", out, "--video-folder", str(grounding_set), "--batch-size", "1"
    )
    assert [(line["id"], line["truth"]) for line in lines] == [
        ("t1", {"span": [0.2, 0.6]}),
        ("t2", {"span": [0.1, 0.3]}),
    ]
    assert all(line["answer"].replace(" ", "") == written for line in lines)
    main(["score", "--task", "tvg", str(out)])
    scores = json.loads((tmp_path / "tvg.scores.json").read_text())["scores"]
    span = [20 / 99, 50 / 99]
    assert scores["mIoU"] == pytest.approx((iou(span, [0.2, 0.6]) + iou(span, [0.1, 0.3])) / 2, abs=1e-6)


def test_a_model_without_coordinate_tokens_answers_in_text(grounding_set, tmp_path, tokenizer_dir, tower_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llava.model.builder import causal_lm_class
    from llava.testing import TINY_LANGUAGE_CONFIGS, tiny_vision_args

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = TINY_LANGUAGE_CONFIGS["llava_gpt2"]()
    config.vocab_size = len(tokenizer)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "stock")
    model = causal_lm_class("llava_gpt2").from_pretrained(tmp_path / "stock")
    model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
    folder = save_model(model, tokenizer, tmp_path / "plain")
    lines = run(
        folder,
        grounding_set / "rec.json",
        "rec",
        tmp_path / "rec.jsonl",
        "--image-folder",
        str(grounding_set),
        "--max-new-tokens",
        "4",
        "--score",
    )
    assert [line["truth"]["box"] for line in lines] == [[0.1, 0.2, 0.5, 0.6], [0.25, 0.25, 0.75, 1.0]]
    assert all(isinstance(line["answer"], str) and "<WIDTH-" not in line["answer"] for line in lines)
    scores = json.loads((tmp_path / "rec.scores.json").read_text())["scores"]
    assert scores["mIoU"] == 0.0  # four random tokens are no box: counted misses


def test_a_reference_without_a_box_is_one_clear_error(coordinate_model, grounding_set, tmp_path):
    model, tokenizer = coordinate_model
    folder = save_model(model, tokenizer, tmp_path / "ckpt")
    bad = grounding_tasks.reg("g1", [0.1, 0.2, 0.5, 0.6], "a red circle", image="a.png")
    (tmp_path / "bad.json").write_text(json.dumps([bad]))
    with pytest.raises(InputError, match="sample 'g1': its reference answer gives no box for rec"):
        run(folder, tmp_path / "bad.json", "rec", tmp_path / "out.jsonl", "--image-folder", str(grounding_set))


def test_video_truths_follow_the_rule_for_frames_and_captions():
    from llava.data.samples import prepare_sample
    from llava.eval.grounding.predict import reference_truth

    boxes = {0.25: [0.1, 0.1, 0.2, 0.2], 0.5: [0.2, 0.2, 0.3, 0.3]}
    stvg = prepare_sample(grounding_tasks.stvg("s1", "a ball", [0.25, 0.5], boxes, video="a.mp4"), "#0")
    # frame round(t * (frames - 1)): the model's 8 frames, else the sample's own count
    assert reference_truth("stvg", stvg, 8) == {
        "span": [0.25, 0.5],
        "frames": 8,
        "boxes": {"2": [0.1, 0.1, 0.2, 0.2], "4": [0.2, 0.2, 0.3, 0.3]},
    }
    assert reference_truth("svg", stvg | {"frames": 5}, 8)["boxes"] == {"1": boxes[0.25], "2": boxes[0.5]}
    elc = prepare_sample(
        grounding_tasks.elc("e1", [0.25, 0.5], boxes[0.25], "a ball rolls.", boxes, video="a.mp4"), "#1"
    )
    assert reference_truth("elc", elc, 8) == {"caption": "a ball rolls"}
    assert reference_truth("elc", elc | {"caption": "a red ball rolls"}, 8) == {"caption": "a red ball rolls"}
