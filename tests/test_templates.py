"""Prompt templates and labels, on a real byte-level BPE tokenizer trained by the test (like BAMBI's)."""

import itertools
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.data.templates import TEMPLATES, get_template
from llava.demo.synthetic import caption_corpus, train_tokenizer
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    process_images,
    process_video_frames,
    tokenizer_image_token,
)
from llava.testing import IMAGE_SIZE, TINY_TOWERS

CAPTION = "un cerchio rosso si muove verso destra"
VIDEO_CONV = [
    {"from": "human", "value": "<video>\nDescrivi il video."},
    {"from": "gpt", "value": CAPTION},
]
# A small chat template of the Llama-3/Gemma kind: role header, content, end-of-turn special token.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok"), caption_corpus() + ["Descrivi il video. E poi?"])


@pytest.fixture
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def chat_tokenizer(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def labelled_runs(tokenizer, labels):
    """Decoded text of each maximal run of labelled positions."""
    return [
        tokenizer.decode(list(run)) for keep, run in itertools.groupby(labels, key=lambda x: x != IGNORE_INDEX) if keep
    ]


def test_versions_are_llavas_names_and_ours():
    llava_names = {
        "default", "v0", "v1", "vicuna_v1", "llama_2", "mistral_instruct", "mistral_orca", "mistral_zephyr",
        "mistral_direct", "plain", "v0_plain", "chatml_direct", "llava_v0", "llava_v0_mmtag", "llava_v1",
        "llava_v1_mmtag", "llava_llama_2", "llava_llama_3", "llava_llama_2_simple", "llava_llama_2_mmtag",
        "llava_mistral_instruct", "mpt", "qwen_1_5", "qwen_2", "qwen_2_5", "gemma_instruct",
    }  # fmt: skip
    assert set(conv_templates) == llava_names
    assert set(TEMPLATES) == llava_names | {"chat", "chatml"}
    assert all(get_template(name).name == name for name in TEMPLATES)
    with pytest.raises(ValueError, match=r"unknown --version 'vicuna_v2'; choose one of \[.*'chatml'.*'vicuna_v1'"):
        get_template("vicuna_v2")


# ------------------------------------------------------------------------------------------- plain
def test_plain_labels_exact_positions(tokenizer):
    ids, labels = get_template("plain").tokenize(VIDEO_CONV, tokenizer)
    caption_ids = tokenizer(CAPTION, add_special_tokens=False).input_ids
    eos = tokenizer.eos_token_id
    # GPT-2 adds no BOS: placeholder, caption, EOS; the human text is dropped.
    assert ids == [IMAGE_TOKEN_INDEX] + caption_ids + [eos]
    assert labels[0] == IGNORE_INDEX  # the visual position
    assert labels[1:] == caption_ids + [eos]  # every caption token and the EOS
    assert labels[-1] == eos
    assert not set(tokenizer("Descrivi", add_special_tokens=False).input_ids) & set(ids)


def test_plain_prompt_is_the_visual_block(tokenizer):
    template = get_template("plain")
    assert template.prompt_ids(VIDEO_CONV, tokenizer) == [IMAGE_TOKEN_INDEX]
    assert template.prompt_ids(VIDEO_CONV[:1], tokenizer) == [IMAGE_TOKEN_INDEX]


def test_plain_text_only_is_language_modelling(tokenizer):
    conv = [{"from": "human", "value": "Descrivi il video."}, {"from": "gpt", "value": CAPTION}]
    ids, labels = get_template("plain").tokenize(conv, tokenizer)
    assert IMAGE_TOKEN_INDEX not in ids
    assert ids == labels == tokenizer(CAPTION, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def test_plain_needs_eos(tokenizer):
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="no EOS"):
        get_template("plain").tokenize(VIDEO_CONV, tokenizer)


# -------------------------------------------------------------------------------------------- chat
def test_chat_uses_the_tokenizers_template_and_labels_only_answers(chat_tokenizer):
    tok = chat_tokenizer
    conv = VIDEO_CONV + [
        {"from": "human", "value": "E poi?"},
        {"from": "gpt", "value": "il video mostra un quadrato"},
    ]
    template = get_template("chat")
    ids, labels = template.tokenize(conv, tok)

    # exactly the tokenizer's own rendering, with the placeholder as one IMAGE_TOKEN_INDEX
    text = tok.apply_chat_template(
        [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in conv], tokenize=False
    )
    expected = tokenizer_image_token(text, tok)
    assert ids == expected
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert labels[ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX

    # only the answers and their end-of-turn token carry labels
    assert labelled_runs(tok, labels) == [CAPTION + "<|end|>", "il video mostra un quadrato<|end|>"]
    labelled = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert all(labels[i] == ids[i] for i in labelled)
    assert tok.convert_tokens_to_ids("<|user|>") not in [ids[i] for i in labelled]
    assert tok.convert_tokens_to_ids("<|assistant|>") not in [ids[i] for i in labelled]

    # the generation prompt for the first question is exactly the start of the training sequence
    prompt = template.prompt_ids(conv[:1], tok)
    assert ids[: len(prompt)] == prompt
    assert tok.decode(prompt[-2:]) == "<|assistant|>\n"
    assert template.prompt_ids(conv[:2], tok) == prompt  # a trailing answer is dropped


def test_chat_without_template_falls_back_to_chatml_with_eos(tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="llava.data.templates"):
        ids, labels = get_template("chat").tokenize(VIDEO_CONV, tokenizer)
    assert labelled_runs(tokenizer, labels) == [CAPTION + tokenizer.eos_token]
    assert labels[-2] == tokenizer.eos_token_id  # EOS ends the answer; the newline after it is layout
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert get_template("chatml").tokenize(VIDEO_CONV, tokenizer) == (ids, labels)
    prompt = get_template("chatml").prompt_ids(VIDEO_CONV, tokenizer)
    assert ids[: len(prompt)] == prompt and tokenizer.decode(prompt[prompt.index(IMAGE_TOKEN_INDEX) + 1 :]).endswith(
        "<|im_start|>assistant\n"
    )


def test_chatml_prefers_im_end_where_the_tokenizer_has_it(tokenizer):
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    ids, labels = get_template("chatml").tokenize(VIDEO_CONV, tokenizer)
    assert labelled_runs(tokenizer, labels) == [CAPTION + "<|im_end|>"]


def test_chatml_ignores_the_tokenizers_own_template(chat_tokenizer):
    ids, labels = get_template("chatml").tokenize(VIDEO_CONV, chat_tokenizer)
    assert chat_tokenizer.convert_tokens_to_ids("<|user|>") not in ids
    assert labelled_runs(chat_tokenizer, labels) == [CAPTION + chat_tokenizer.eos_token]


def test_chat_template_whose_prefixes_differ_still_finds_the_answers(chat_tokenizer):
    # This template closes the whole conversation with EOS, so a rendered prefix is not a prefix of the
    # whole: the answer is located by its text and extended over its end-of-turn token.
    tok = chat_tokenizer
    tok.chat_template = CHAT_TEMPLATE + "{% if not add_generation_prompt %}{{ eos_token }}{% endif %}"
    conv = VIDEO_CONV + [{"from": "human", "value": "E poi?"}, {"from": "gpt", "value": "un quadrato"}]
    ids, labels = get_template("chat").tokenize(conv, tok)
    runs = labelled_runs(tok, labels)
    assert runs[0] == CAPTION + "<|end|>"
    assert runs[1].startswith("un quadrato<|end|>")


def test_placeholders_and_roles_are_checked(tokenizer):
    with pytest.raises(ValueError, match="unknown speaker"):
        get_template("plain").tokenize([{"from": "robot", "value": "x"}], tokenizer)


# -------------------------------------------------------------------------------------- mm_utils
def test_tokenizer_image_token_splits_both_placeholders(tokenizer):
    ids = tokenizer_image_token("<image>\nun cerchio<video> rosso", tokenizer)
    assert ids.count(IMAGE_TOKEN_INDEX) == 2 and ids[0] == IMAGE_TOKEN_INDEX
    text = [i for i in ids if i != IMAGE_TOKEN_INDEX]
    assert tokenizer.decode(text) == "\nun cerchio rosso"
    tensor = tokenizer_image_token("<video>\nun", tokenizer, return_tensors="pt")
    assert tensor.dtype == torch.long and tensor[0].item() == IMAGE_TOKEN_INDEX
    assert tokenizer_image_token("<video>", tokenizer, image_token_index=-7) == [-7]


def test_frame_and_image_preprocessing():
    processor = TINY_TOWERS["dinov2"]()[1]
    frames = np.random.default_rng(0).integers(0, 255, (5, 40, 60, 3), dtype=np.uint8)
    pixels = process_video_frames(frames, processor)
    assert pixels.shape == (5, 3, IMAGE_SIZE, IMAGE_SIZE) and pixels.dtype == torch.float32
    assert torch.equal(process_video_frames(torch.from_numpy(frames), processor), pixels)
    images = process_images([Image.fromarray(frames[0]).convert("L"), frames[1]], processor)
    assert images.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="T, H, W, 3"):
        process_video_frames(frames[0], processor)


def test_keywords_stopping_criteria(tokenizer):
    stop = KeywordsStoppingCriteria(["destra"], tokenizer)
    going = torch.tensor([tokenizer("un cerchio rosso").input_ids])
    done = torch.tensor([tokenizer("si muove verso destra").input_ids])
    assert stop(going, None).tolist() == [False]
    assert stop(done, None).tolist() == [True]
    # the prompt is never searched
    prompted = KeywordsStoppingCriteria(["destra"], tokenizer, input_ids=done)
    assert prompted(torch.cat([done, going], dim=1), None).tolist() == [False]
