"""Localized Narratives -> the three BabyLM conditions: a JSONL file written here with known traces, boxes
checked against a hand computation, and the word limit that stops all three at the same narrative."""

import json
import logging

import pytest
from PIL import Image
from transformers import AutoTokenizer

from llava.data.files import DataFileError
from llava.data.localized_narratives import convert, main
from llava.data.samples import load_samples
from llava.data.words import count_words, words_of_ids
from llava.modeling.coordinate_tokens import PLACEHOLDERS


def point(x, y, t):
    return {"x": x, "y": y, "t": t}


def timed(*utterances):
    return [{"utterance": text, "start_time": start, "end_time": end} for text, start, end in utterances]


DOG = {
    "dataset_id": "mscoco_val2017",
    "image_id": "137576",
    "annotator_id": 93,
    "caption": "In this image we can see a dog.  It is on the grass.",
    "timed_caption": timed(
        ("In this image", 0.0, 1.0),
        ("we can see a dog.", 1.0, 2.0),
        ("It is on", 2.5, 3.0),
        ("the grass.", 3.0, 4.0),
    ),
    "traces": [
        [
            point(0.1, 0.2, 0.5),
            point(0.3, 0.1, 0.9),
            point(-0.05, 0.5, 1.0),
            point(0.4, 0.6, 1.5),
            point(0.2, 1.1, 2.0),
        ],
        [point(0.5, 0.5, 2.6), point(0.7, 0.9, 3.5), point(0.6, 0.8, 3.9)],
    ],
}
# By hand: "In this image" [0, 1] s holds the points at 0.5, 0.9 and 1.0 (x 0.1, 0.3, -0.05 -> clipped 0;
# y 0.2, 0.1, 0.5); "we can see a dog." [1, 2] those at 1.0, 1.5, 2.0 (y 1.1 -> 1); "It is on" [2.5, 3] only
# the one at 2.6: no box; "the grass." [3, 4] those at 3.5 and 3.9.
DOG_INTERLEAVED = (
    "In this image [0, 0.1, 0.3, 0.5] we can see a dog. [0, 0.5, 0.4, 1] It is on the grass. [0.6, 0.8, 0.7, 0.9]"
)
CAR = {  # its utterances hold two words, its caption three: written without boxes
    "dataset_id": "open_images_train",
    "image_id": "0a1b2c",
    "annotator_id": 7,
    "caption": "A red car.",
    "timed_caption": timed(("A red", 0.0, 1.0)),
    "traces": [[point(0.1, 0.1, 0.2), point(0.2, 0.2, 0.4)]],
}
GONE = {**CAR, "image_id": "ffff", "caption": "Not here."}
SILENT = {**CAR, "image_id": "0a1b2c", "annotator_id": 8, "caption": " ", "timed_caption": []}
CATS = {**CAR, "image_id": "cats", "annotator_id": 9, "caption": "Two cats sleep.", "timed_caption": []}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "open_images_train").mkdir(parents=True)
    for name in ("000000137576.jpg", "open_images_train/0a1b2c.jpg", "cats.png"):
        Image.new("RGB", (8, 6), "blue").save(folder / name)
    return folder


def write_narratives(path, narratives):
    path.write_text("".join(json.dumps(n) + "\n" for n in narratives))
    return str(path)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_three_conditions_with_boxes_computed_by_hand(tmp_path, images):
    narratives = write_narratives(tmp_path / "ln.jsonl", [DOG, CAR, GONE, SILENT, CATS])
    out = tmp_path / "out"
    summary = convert(narratives, str(images), str(out))
    text, text_image, interleaved = (
        read_jsonl(out / name) for name in ("text.jsonl", "text_image.jsonl", "interleaved.jsonl")
    )
    caption = "In this image we can see a dog. It is on the grass."
    assert text[0] == {"id": "mscoco_val2017_137576_93", "conversations": [{"from": "gpt", "value": caption}]}
    assert text_image[0] == {
        "id": "mscoco_val2017_137576_93",
        "image": "000000137576.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nPlease describe in detail the contents of the image."},
            {"from": "gpt", "value": caption},
        ],
    }
    assert interleaved[0]["image"] == "000000137576.jpg"
    assert interleaved[0]["conversations"][1]["value"] == DOG_INTERLEAVED
    assert interleaved[1]["image"] == "open_images_train/0a1b2c.jpg"
    assert interleaved[1]["conversations"][1]["value"] == "A red car."
    assert (
        [s["id"] for s in text]
        == [s["id"] for s in interleaved]
        == [
            "mscoco_val2017_137576_93",
            "open_images_train_0a1b2c_7",
            "open_images_train_cats_9",
        ]
    )
    dropped = read_jsonl(out / "dropped.jsonl")
    assert [(d["id"], d["line"]) for d in dropped] == [
        ("open_images_train_ffff_7", 3),
        ("open_images_train_0a1b2c_8", 4),
    ]
    assert dropped[0]["reason"] == f"no image file for ffff in {images}" and dropped[1]["reason"] == "no caption"
    assert (summary.written, summary.words, summary.boxes, summary.without_boxes) == (3, 19, 3, 2)

    # what training reads: the boxes are the answer's coordinates, in [0, 1] and in order
    (grounded, *_) = load_samples(str(out / "interleaved.jsonl"), numbers=True)
    assert grounded["variables"]["spatial_width_output_locations"] == [0, 0.3, 0, 0.4, 0.6, 0.7]
    assert grounded["variables"]["spatial_height_output_locations"] == [0.1, 0.5, 0.5, 1, 0.8, 0.9]
    assert all("variables" not in s for s in load_samples(str(out / "text_image.jsonl")))


def test_a_word_limit_stops_the_three_conditions_at_the_same_narrative_with_the_same_words(
    tmp_path, images, tokenizer_dir
):
    narratives = write_narratives(tmp_path / "ln.jsonl", [DOG, CAR, GONE, CATS])
    out = tmp_path / "out"
    # 13 + 3 words fit in 16; the cats' 3 more would not
    summary = convert(narratives, str(images), str(out), word_limit=16)
    assert summary.stopped_at_limit and summary.words == 16
    files = [out / name for name in ("text.jsonl", "text_image.jsonl", "interleaved.jsonl")]
    for path in files:
        assert [s["id"] for s in read_jsonl(path)] == ["mscoco_val2017_137576_93", "open_images_train_0a1b2c_7"]
        assert sum(count_words(s["conversations"][-1]["value"]) for s in read_jsonl(path)) == 16

    # and training counts the same words in each: coordinates are not words on the tokens either
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens(list(PLACEHOLDERS), special_tokens=True)
    counted = []
    for path in files:
        answers = [s["conversations"][-1]["value"] for s in load_samples(str(path))]
        counted.append(words_of_ids([tokenizer(a).input_ids + [tokenizer.eos_token_id] for a in answers], tokenizer))
    assert counted == [16, 16, 16]


def test_malformed_narratives_are_listed_in_one_line_and_nothing_is_written(tmp_path, images):
    bad_trace = {**CATS, "traces": [[{"x": 0.1, "y": 0.2}]]}
    no_caption = {key: value for key, value in DOG.items() if key != "caption"}
    path = tmp_path / "ln.jsonl"
    path.write_text(json.dumps(DOG) + "\n{not json\n" + json.dumps(no_caption) + "\n" + json.dumps(bad_trace) + "\n")
    out = tmp_path / "out"
    with pytest.raises(DataFileError) as caught:
        convert(str(path), str(images), str(out))
    assert str(caught.value) == (
        f"3 problems in {path}: line 2: not JSON: expecting property name enclosed in double quotes; "
        "line 3: a narrative without 'caption'; "
        "line 4: traces[0] has a point that is not {x, y, t} numbers: {'x': 0.1, 'y': 0.2}"
    )
    assert list(out.iterdir()) == []  # no condition file, whole or partial


def test_the_command_writes_the_conditions_and_sums_up(tmp_path, images, caplog):
    narratives = write_narratives(tmp_path / "ln.jsonl", [DOG, GONE])
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="llava.data.localized_narratives"):
        assert main([narratives, "--image_folder", str(images), "--out_dir", str(out), "--word_limit", "1e6"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "dropped.jsonl",
        "interleaved.jsonl",
        "text.jsonl",
        "text_image.jsonl",
    ]
    assert "1 of 2 narratives written" in caplog.text and "13 words, 3 boxes" in caplog.text
