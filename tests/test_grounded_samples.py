"""Coordinates in samples (LLaVA-ST's `variables`): read from files written here, refused in one line when
wrong, and carried to the model as `coordinate_values` by the dataset and the collator."""

import json
import pickle

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.data import grounding_tasks as tasks
from llava.data.dataset import DataCollatorForSupervisedDataset, LazySupervisedDataset, MediaFolders, ensure_pad_token
from llava.data.files import DataFileError
from llava.data.samples import load_samples, prepare_sample
from llava.data.words import count_words, words_of_ids
from llava.data.worker_handoff import for_training_process
from llava.errors import UsageError
from llava.modeling.coordinate_tokens import PLACEHOLDERS, VARIABLE_KEYS
from llava.testing import TINY_TOWERS
from llava.train import preflight
from llava.train.milestones import count_words as count_label_words

from test_errors_train import assert_one_error, text_args, train_here  # noqa: F401  (train_here: a fixture)

TEMP_IN, TEMP_OUT = "<TEMP-INPUT>", "<TEMP-OUTPUT>"
BOX_IN = "[<WIDTH-INPUT><HEIGHT-INPUT><WIDTH-INPUT><HEIGHT-INPUT>]"
BOX_OUT = "[<WIDTH-OUTPUT><HEIGHT-OUTPUT><WIDTH-OUTPUT><HEIGHT-OUTPUT>]"


def conv(*turns):
    return [{"from": speaker, "value": value} for speaker, value in zip(("human", "gpt") * 4, turns)]


def variables(**given):
    full = {key: [] for key in VARIABLE_KEYS}
    full.update(given)
    return full


def write_jsonl(path, samples):
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))
    return str(path)


@pytest.fixture
def tokenizer(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ensure_pad_token(tok)
    tok.add_tokens(list(PLACEHOLDERS), special_tokens=True)  # what add_coordinate_tokens gives a model's
    return tok


# ----------------------------------------------------------------------------------- the two forms
def test_numbers_in_the_text_become_placeholders_and_variables_in_text_order(tmp_path):
    sample = {
        "id": "g",
        "conversations": conv(
            "Cosa fa l'oggetto in [0.1, 0.2, 0.5,0.6] tra {0.25, 0.75}?",
            "Salta {0.3,0.4} poi corre [0, 0.1, 1, 0.9] e si ferma a {0.9}.",
        ),
    }
    (prepared,) = load_samples(write_jsonl(tmp_path / "g.jsonl", [sample]), numbers=True)
    assert prepared["conversations"] == [
        {"from": "user", "value": f"Cosa fa l'oggetto in {BOX_IN} tra {{{TEMP_IN}{TEMP_IN}}}?"},
        {"from": "assistant", "value": f"Salta {{{TEMP_OUT}{TEMP_OUT}}} poi corre {BOX_OUT} e si ferma a {TEMP_OUT}."},
    ]
    assert prepared["variables"] == variables(
        temporal_input_locations=[0.25, 0.75],
        temporal_output_locations=[0.3, 0.4, 0.9],
        spatial_width_input_locations=[0.1, 0.5],
        spatial_height_input_locations=[0.2, 0.6],
        spatial_width_output_locations=[0.0, 1.0],
        spatial_height_output_locations=[0.1, 0.9],
    )


def test_llava_st_placeholders_keep_their_variables_and_mix_with_numbers():
    # LLaVA-ST's training form, plus a number box before its placeholders: values merge in text order
    sample = {
        "id": "st",
        "video": "v.mp4",
        "conversations": conv(
            "<video>\n[0.1, 0.1, 0.2, 0.2] e [<WIDTH-INPUT>,<HEIGHT-INPUT>,<WIDTH-INPUT>,<HEIGHT-INPUT>]?",
            f"{{{TEMP_OUT}{TEMP_OUT}}}, {TEMP_OUT}: {BOX_OUT}",
        ),
        "variables": variables(
            spatial_width_input_locations=[0.3, 0.4],
            spatial_height_input_locations=[0.5, 0.6],
            temporal_output_locations=[0.2, 0.6, 0.4],
            spatial_width_output_locations=[0.25, 0.5],
            spatial_height_output_locations=[0.0, 1.0],
        ),
    }
    prepared = prepare_sample(sample, "st.json #0", numbers=True)
    assert prepared["conversations"][0]["value"].startswith(f"<video>\n{BOX_IN} e [<WIDTH-INPUT>,")
    assert prepared["conversations"][1]["value"] == sample["conversations"][1]["value"]
    assert prepared["variables"]["spatial_width_input_locations"] == [0.1, 0.2, 0.3, 0.4]
    assert prepared["variables"]["spatial_height_input_locations"] == [0.1, 0.2, 0.5, 0.6]
    assert prepared["variables"]["temporal_output_locations"] == [0.2, 0.6, 0.4]


def test_samples_without_coordinates_are_as_they_always_were():
    plain = {"id": "t", "conversations": conv("Scrivi [1, 2, 3] e {x} e [a, b, c, d].", "una frase {1, 2, 3}")}
    assert prepare_sample(plain, "t.json #0") == {
        "id": "t",
        "modality": None,
        "media": None,
        "conversations": [
            {"from": "user", "value": plain["conversations"][0]["value"]},
            {"from": "assistant", "value": "una frase {1, 2, 3}"},
        ],
    }
    empty = {**plain, "variables": variables()}  # LLaVA-ST's empty lists: no coordinates either
    assert "variables" not in prepare_sample(empty, "t.json #0")


# ------------------------------------------------------------------------------------- bad samples
BAD = [
    (conv("Dov'è?", "[0.2, 0.1, 1.2, 0.5]"), None,
     "turn 2 (gpt): box [0.2, 0.1, 1.2, 0.5] has a value outside [0, 1] (x1, y1, x2, y2 are fractions of the width and height)"),
    (conv("Dov'è [-0.1, 0, 0.5, 0.5]?", "lì"), None,
     "turn 1 (human): box [-0.1, 0, 0.5, 0.5] has a value outside [0, 1] (x1, y1, x2, y2 are fractions of the width and height)"),
    (conv("Dov'è?", "[0.5, 0.1, 0.2, 0.5]"), None, "turn 2 (gpt): box [0.5, 0.1, 0.2, 0.5] has x2 < x1"),
    (conv("Dov'è?", "[0.1, 0.5, 0.2, 0.4]"), None, "turn 2 (gpt): box [0.1, 0.5, 0.2, 0.4] has y2 < y1"),
    (conv("Quando?", "{0.7, 0.3}"), None, "turn 2 (gpt): span {0.7, 0.3} ends before it starts"),
    (conv("Quando?", "{0.7, 1.3}"), None,
     "turn 2 (gpt): span {0.7, 1.3} is outside the clip (times are fractions of its duration, in [0, 1])"),
    (conv(f"Dov'è {BOX_IN}?", "lì"),
     variables(spatial_width_input_locations=[0.6, 0.2], spatial_height_input_locations=[0.1, 0.2]),
     "turn 1 (human): box [0.6, 0.1, 0.2, 0.2] has x2 < x1"),
    (conv(f"Quando {TEMP_IN}?", "ora"), variables(temporal_input_locations=[1.5]),
     "turn 1 (human): <TEMP-INPUT> has the value 1.5, outside [0, 1]"),
    (conv("Quando?", "ora"), {"temporal_locations": [0.5]},
     "'variables' has unknown key(s) ['temporal_locations']; LLaVA-ST's are " + str(list(VARIABLE_KEYS))),
    (conv("Quando?", f"{{{TEMP_OUT}{TEMP_OUT}}}"), variables(temporal_output_locations=[0.1, 0.2, 0.3]),
     "variables['temporal_output_locations'] has 3 value(s) for 2 <TEMP-OUTPUT> in the text: 1 name(s) no placeholder"),
    (conv("Quando?", "{0.1, 0.2}"), variables(temporal_input_locations=[0.5]),
     "variables['temporal_input_locations'] has 1 value(s) for 0 <TEMP-INPUT> in the text: 1 name(s) no placeholder"),
    (conv("Quando?", f"{{{TEMP_OUT}{TEMP_OUT}}}"), variables(temporal_output_locations=[0.1]),
     "the text has 2 <TEMP-OUTPUT> but variables['temporal_output_locations'] has 1 value(s): 1 placeholder(s) without a value"),
    (conv(f"Quando {TEMP_IN}?", "ora"), None,
     "the text has 1 <TEMP-INPUT> but variables['temporal_input_locations'] has 0 value(s): 1 placeholder(s) without a value"),
    (conv(f"Quando {TEMP_IN}?", "ora"), variables(temporal_input_locations=[True]),
     "variables['temporal_input_locations'][0] is True, not a number"),
    (conv("Quando?", "ora"), [0.5], "'variables' must be an object of LLaVA-ST's six lists"),
]  # fmt: skip


@pytest.mark.parametrize("conversations, given, message", BAD)
def test_a_bad_coordinate_is_one_line_naming_the_sample_and_its_place(tmp_path, conversations, given, message):
    sample = {"id": "b", "conversations": conversations} | ({"variables": given} if given is not None else {})
    path = write_jsonl(tmp_path / "bad.jsonl", [sample])
    with pytest.raises(DataFileError) as caught:
        load_samples(path, numbers=True)
    assert str(caught.value) == f"sample 'b' (bad.jsonl:1): {message}"


def test_every_bad_coordinate_is_listed_before_training(assets, tmp_path, train_here):  # noqa: F811
    samples = [
        {"id": "ok", "conversations": conv("Dov'è?", "[0.1, 0.1, 0.2, 0.2]")},
        {"id": "x", "conversations": conv("Dov'è?", "[0.5, 0.1, 0.2, 0.5]")},
        {"id": "v", "conversations": conv("Quando?", "ora"), "variables": {"temporal": [0.5]}},
    ]
    data = write_jsonl(tmp_path / "grounded.jsonl", samples)
    assert_one_error(
        train_here(text_args(assets, data, tmp_path / "out") + ["--coordinate_tokens", "True"]),
        f"2 problems in {data}: sample 'x' (grounded.jsonl:2): turn 2 (gpt): box [0.5, 0.1, 0.2, 0.5] has x2 < x1; "
        "sample 'v' (grounded.jsonl:3): 'variables' has unknown key(s) ['temporal']; LLaVA-ST's are "
        f"{list(VARIABLE_KEYS)}",
    )


GROUNDED = {"id": "g", "conversations": conv("Dove?", BOX_OUT), "variables": variables(
    spatial_width_output_locations=[0.0, 1.0], spatial_height_output_locations=[0.0, 1.0]
)}  # fmt: skip


def test_numbers_in_a_corpus_for_a_model_without_coordinate_tokens_stay_text(assets, tmp_path, train_here):  # noqa: F811
    text = {"id": "t", "conversations": conv("Conta", "[1, 2, 3, 4] e {3} e {0.1, 0.2}")}
    (prepared,) = load_samples(write_jsonl(tmp_path / "t.jsonl", [text]))
    assert prepared["conversations"][1]["value"] == "[1, 2, 3, 4] e {3} e {0.1, 0.2}" and "variables" not in prepared
    data = write_jsonl(tmp_path / "t.jsonl", [text])
    result = train_here(text_args(assets, data, tmp_path / "out"), cli=preflight.main)
    assert result.returncode == 0 and result.stdout.startswith("ok: 1 samples"), result.stderr


def test_coordinates_for_a_model_without_coordinate_tokens_fail_before_training(assets, tmp_path, train_here):  # noqa: F811
    data = write_jsonl(tmp_path / "grounded.jsonl", [GROUNDED])
    assert_one_error(
        train_here(text_args(assets, data, tmp_path / "out")),
        "1 sample(s) of --data_path have coordinates (boxes, spans or LLaVA-ST's placeholders; the first: 'g') but "
        f"the model has no coordinate tokens: give --coordinate_tokens (LLaVA-ST's --stage 2) ({data})",
        status=2,
    )


def test_with_coordinate_tokens_asked_for_the_same_data_passes_the_checks(assets, tmp_path, train_here):  # noqa: F811
    data = write_jsonl(tmp_path / "grounded.jsonl", [{"id": "g", "conversations": conv("Dove?", "[0, 0, 1, 1]")}])
    for extra in (["--coordinate_tokens", "True"], ["--stage", "2"]):  # LLaVA-ST's spelling sets the flag
        result = train_here(text_args(assets, data, tmp_path / "out") + extra, cli=preflight.main)
        assert result.returncode == 0 and result.stdout.startswith("ok: 1 samples"), result.stderr


# ------------------------------------------------------------------------------ dataset and collator
def grounded_dataset(tmp_path, tokenizer, samples, **kwargs):
    path = write_jsonl(tmp_path / "d.jsonl", samples)
    return LazySupervisedDataset(path, tokenizer, num_frames=8, **kwargs)


QUESTION = {"id": "q", "conversations": conv("rosso [0.1, 0.2, 0.3, 0.4] quando?", "da {0.25, 0.5} poi {0.75, 1}")}


def values_at(item, tokenizer, placeholder):
    where = item["input_ids"] == tokenizer.convert_tokens_to_ids(placeholder)
    return item["coordinate_values"][where].tolist()


def test_items_carry_each_placeholder_s_value_and_nan_elsewhere(tmp_path, tokenizer):
    item = grounded_dataset(tmp_path, tokenizer, [QUESTION], template="chatml")[0]
    values = item["coordinate_values"]
    assert values.dtype == torch.float32 and values.shape == item["input_ids"].shape
    assert values_at(item, tokenizer, "<WIDTH-INPUT>") == pytest.approx([0.1, 0.3])
    assert values_at(item, tokenizer, "<HEIGHT-INPUT>") == pytest.approx([0.2, 0.4])
    assert values_at(item, tokenizer, TEMP_OUT) == [0.25, 0.5, 0.75, 1.0]
    assert int((~values.isnan()).sum()) == 8  # nothing else has a value


def test_the_plain_template_drops_the_question_s_values_with_its_text(tmp_path, tokenizer):
    item = grounded_dataset(tmp_path, tokenizer, [QUESTION], template="plain")[0]
    assert values_at(item, tokenizer, "<WIDTH-INPUT>") == []
    assert item["coordinate_values"][~item["coordinate_values"].isnan()].tolist() == [0.25, 0.5, 0.75, 1.0]


def test_truncation_drops_the_values_of_the_placeholders_it_cuts(tmp_path, tokenizer):
    full = grounded_dataset(tmp_path, tokenizer, [QUESTION], template="plain")[0]
    # cut the last span's second placeholder and what follows it
    placeholders = (full["input_ids"] == tokenizer.convert_tokens_to_ids(TEMP_OUT)).nonzero().flatten().tolist()
    cut = grounded_dataset(tmp_path, tokenizer, [QUESTION], template="plain", model_max_length=placeholders[-1])[0]
    assert cut["truncated"] and len(cut["input_ids"]) == placeholders[-1]
    assert values_at(cut, tokenizer, TEMP_OUT) == [0.25, 0.5, 0.75]
    assert cut["coordinate_values"].shape == cut["input_ids"].shape


def test_the_collator_pads_values_with_nan_and_adds_them_only_when_there_are_some(tmp_path, tokenizer):
    ds = grounded_dataset(tmp_path, tokenizer, [{"id": "t", "conversations": conv("Scrivi.", "un testo")}, QUESTION])
    text, grounded = ds[0], ds[1]
    assert "coordinate_values" not in text
    collate = DataCollatorForSupervisedDataset(tokenizer)
    assert "coordinate_values" not in collate([text, text])
    batch = collate([text, grounded])
    values = batch["coordinate_values"]
    assert values.shape == batch["input_ids"].shape and values[0].isnan().all()
    n = len(grounded["input_ids"])
    assert torch.equal(values[1, :n].nan_to_num(-1), grounded["coordinate_values"].nan_to_num(-1))
    # from a DataLoader worker the batch crosses as bytes (worker_handoff.py): NaN and values intact
    crossed = pickle.loads(pickle.dumps(for_training_process(batch)))
    assert torch.equal(crossed["coordinate_values"].nan_to_num(-1), values.nan_to_num(-1))


def test_a_tokenizer_without_coordinate_tokens_is_refused_in_one_line(tmp_path, tokenizer_dir):
    plain_tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with pytest.raises(UsageError, match=r"^1 sample\(s\) of --data_path have coordinates .* give --coordinate_tokens"):
        grounded_dataset(tmp_path, plain_tokenizer, [GROUNDED])


def test_an_image_sample_with_coordinates(tmp_path, tokenizer):
    Image.new("RGB", (48, 32), "red").save(tmp_path / "a.png")
    sample = tasks.rec("r", "il quadrato", [0.1, 0.2, 0.3, 0.4], image="a.png", language="it")
    ds = grounded_dataset(
        tmp_path,
        tokenizer,
        [sample],
        template="chatml",
        folders=MediaFolders(image_folder=str(tmp_path)),
        image_processor=TINY_TOWERS["dinov2"]()[1],
    )
    item = ds[0]
    assert item["pixel_values"] is not None and IMAGE_TOKEN_INDEX in item["input_ids"]
    # shaped like the ids before the model splices the visual block in at IMAGE_TOKEN_INDEX
    assert item["coordinate_values"].shape == item["input_ids"].shape
    assert values_at(item, tokenizer, "<WIDTH-OUTPUT>") == pytest.approx([0.1, 0.3])


# ------------------------------------------------------------------------------------- task prompts
def test_each_task_s_sample_reads_as_coordinates():
    box, span = [0.1, 0.2, 0.3, 0.4], [0.2, 0.6]
    frames = {0.4: [0.2, 0.2, 0.4, 0.4], 0.3: box}
    built = {
        "rec": tasks.rec("1", "the red ball", box, image="a.jpg"),
        "reg": tasks.reg("2", box, "the red ball", image="a.jpg"),
        "tvg": tasks.tvg("3", "A man opens the door.", span, video="v.mp4"),
        "tr": tasks.tr("4", span, "a man opens the door", video="v.mp4"),
        "stvg": tasks.stvg("5", "a child holds a bat", span, frames, video="v.mp4"),
        "svg": tasks.svg("6", span, "who holds the bat?", frames, video="v.mp4"),
        "elc": tasks.elc("7", span, box, "a child swings the bat.", frames, video="v.mp4"),
        "dvc": tasks.dvc("8", [([0.5, 0.9], "he sits"), ([0.0, 0.4], "a man walks.")], video="v.mp4"),
        "dgc": tasks.dgc("9", [("a dog", box), ("on the grass", None)], image="a.jpg"),
    }
    answers = {name: sample["conversations"][1]["value"] for name, sample in built.items()}
    assert answers["stvg"] == "{0.2, 0.6}, {0.3}: [0.1, 0.2, 0.3, 0.4], {0.4}: [0.2, 0.2, 0.4, 0.4]"
    assert answers["elc"] == (
        "Ends in {0.6}, a child swings the bat. Object bounding box: {0.3}: [0.1, 0.2, 0.3, 0.4], {0.4}: [0.2, 0.2, 0.4, 0.4]"
    )
    assert answers["dvc"] == "{0, 0.4}, a man walks. {0.5, 0.9}, he sits."
    assert answers["dgc"] == "a dog [0.1, 0.2, 0.3, 0.4] on the grass"
    assert built["tvg"]["conversations"][0]["value"] == (
        "<video>\nGive you a textual query: 'A man opens the door'. When does the described content occur in the "
        "video? Please return the start and end timestamps."
    )
    assert built["elc"]["conversations"][0]["value"].startswith(
        "<video>\nStarts in {0.2}, what happened about the subject/object within the specified region [0.1, 0.2, 0.3, 0.4]?"
    )
    prepared = {name: prepare_sample(sample, f"{name} #0", numbers=True) for name, sample in built.items()}
    assert (
        prepared["stvg"]["conversations"][1]["value"]
        == f"{{{TEMP_OUT}{TEMP_OUT}}}, {TEMP_OUT}: {BOX_OUT}, {TEMP_OUT}: {BOX_OUT}"
    )
    assert prepared["stvg"]["variables"]["temporal_output_locations"] == [0.2, 0.6, 0.3, 0.4]
    assert prepared["stvg"]["variables"]["spatial_width_output_locations"] == [0.1, 0.3, 0.2, 0.4]
    assert prepared["reg"]["variables"]["spatial_height_input_locations"] == [0.2, 0.4]
    assert prepared["elc"]["variables"]["temporal_input_locations"] == [0.2]
    assert prepared["tr"]["conversations"][1]["value"] == "a man opens the door"
    assert all("variables" in p for p in prepared.values())


def test_italian_prompts_and_a_missing_language():
    rec = tasks.rec("1", "il gatto nero", [0, 0, 1, 1], image="a.jpg", language="it")
    assert rec["conversations"][0]["value"] == "<image>\nDov'è il gatto nero in questa immagine?"
    tvg = tasks.tvg("2", "Un uomo apre la porta.", [0.1, 0.2], video="v.mp4", language="it", variant=0)
    assert tvg["conversations"][0]["value"].startswith("<video>\nQuando compare Un uomo apre la porta nel video?")
    stvg = tasks.stvg("3", "un bambino", [0.1, 0.2], {0.1: [0, 0, 1, 1]}, video="v.mp4", language="it")
    assert stvg["conversations"][0]["value"].startswith("<video>\nIn quale intervallo del video si vede un bambino?")
    with pytest.raises(ValueError, match=r"^no 'it' prompt for REG; languages with one: \['en'\]$"):
        tasks.reg("4", [0, 0, 1, 1], "x", image="a.jpg", language="it")


# ------------------------------------------------------------------------------------------- words
def test_coordinates_are_not_words(tokenizer):
    assert count_words("a dog [0.1, 0.2, 0.3, 0.4] runs {0.1, 0.5}, then {0.7}: stops") == 5
    assert count_words(f"a dog {BOX_OUT} runs {{{TEMP_OUT}{TEMP_OUT}}}, {TEMP_OUT}: [<WIDTH-042>] stops.") == 4
    assert count_words("parole [1, 2, 3] e — basta") == 7  # other text counts as it always has
    # training counts the same on the tokens of the answer: the bracket a skipped token leaves is not a word
    answer = tokenizer(f"un cane {BOX_OUT} corre {{{TEMP_OUT}{TEMP_OUT}}}, {TEMP_OUT}: {BOX_OUT}").input_ids
    answer.append(tokenizer.eos_token_id)
    assert words_of_ids([answer], tokenizer) == 3
    labels = torch.tensor([[-100] * 3 + answer])
    assert count_label_words(labels, tokenizer) == 3


def test_words_of_text_without_coordinates_are_counted_as_before(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [tok("un cerchio rosso [ ] si muove").input_ids + [tok.eos_token_id], tok("verso destra").input_ids]
    before = sum(len(tok.decode(ids, skip_special_tokens=True).split()) for ids in rows)
    assert words_of_ids(rows, tok) == before == 9
