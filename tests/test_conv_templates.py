"""LLaVA's `conv_templates` as clients use them, and the same names as training `--version`s.

Two tokenizers built here: the byte-level BPE the other tests train (GPT-2's kind: no BOS, `</s>` and
`<|im_end|>` are plain text), and a Llama-like one (Metaspace pre-tokenizer, BOS added by default, `</s>`,
`<|im_start|>`, `<|im_end|>`, `<start_of_turn>`, `<end_of_turn>` as special tokens)."""

import copy
import itertools
import logging
import string
import subprocess
import sys

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import Conversation, SeparatorStyle, conv_templates, default_conversation
from llava.data.templates import get_template
from llava.demo.synthetic import caption_corpus, train_tokenizer
from llava.mm_utils import tokenizer_image_token

from train_helpers import ROOT

QUESTION = "<image>\nDescrivi il video."
CAPTION = "un cerchio rosso si muove verso destra"
SECOND_QUESTION, SECOND_ANSWER = "E poi?", "il video mostra un quadrato"
ONE_TURN = [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": CAPTION}]
TWO_TURNS = ONE_TURN + [{"from": "human", "value": SECOND_QUESTION}, {"from": "gpt", "value": SECOND_ANSWER}]
CORPUS = caption_corpus() + ["Descrivi il video. E poi?", SECOND_ANSWER]
LLAMA_SPECIALS = ["<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"]

# What closes an answer in LLaVA's layouts (facts of LLaVA's templates, written out here on purpose).
END_OF_ANSWER = {
    **dict.fromkeys(["default", "v0", "llava_v0", "llava_v0_mmtag"], "###"),
    **dict.fromkeys(["v1", "vicuna_v1", "llava_v1", "llava_v1_mmtag", "mistral_zephyr"], "</s>"),
    **dict.fromkeys(["llama_2", "llava_llama_2", "llava_llama_2_simple", "llava_llama_2_mmtag"], " </s>"),
    **dict.fromkeys(["mistral_instruct", "llava_mistral_instruct"], " </s>"),
    **dict.fromkeys(["mpt", "mistral_orca", "mistral_direct", "chatml_direct"], "<|im_end|>"),
    **dict.fromkeys(["qwen_1_5", "qwen_2", "qwen_2_5"], "<|im_end|>"),
    "gemma_instruct": "<end_of_turn>",
    "llava_llama_3": "<|eot_id|>",
}
PLAIN_NAMES = ["plain", "v0_plain"]
NAMES = sorted(END_OF_ANSWER) + PLAIN_NAMES


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    return AutoTokenizer.from_pretrained(train_tokenizer(tmp_path_factory.mktemp("bpe"), CORPUS))


@pytest.fixture(scope="module")
def llama_like(tmp_path_factory):
    model = Tokenizer(models.BPE(unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    model.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        min_frequency=1,
        special_tokens=["<unk>", "<s>", "</s>", *LLAMA_SPECIALS],
        initial_alphabet=list(string.printable) + ["▁"],  # every character the templates write
    )
    model.train_from_iterator(CORPUS, trainer)
    model.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", model.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=LLAMA_SPECIALS,
    )
    folder = tmp_path_factory.mktemp("llama_like")
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(params=["byte_level", "llama_like"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def client_prompt(name: str, turns: list[tuple[str, str | None]]) -> str:
    """The prompt as LLaVA clients build it: copy, append_message per turn, get_prompt."""
    conv = conv_templates[name].copy()
    for speaker, text in turns:
        conv.append_message(conv.roles[0] if speaker == "human" else conv.roles[1], text)
    return conv.get_prompt()


def client_ids(prompt: str, tokenizer) -> list[int]:
    return tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").tolist()


def labelled_runs(tokenizer, labels):
    """Decoded text of each maximal run of labelled positions."""
    return [
        tokenizer.decode(list(run)) for keep, run in itertools.groupby(labels, key=lambda x: x != IGNORE_INDEX) if keep
    ]


def test_the_tokenizers_are_the_two_kinds(byte_level, llama_like):
    assert client_ids("ciao", byte_level)[0] != byte_level.bos_token_id  # no BOS
    assert client_ids("ciao", llama_like)[0] == llama_like.bos_token_id  # BOS by default
    for token in ["</s>", *LLAMA_SPECIALS]:
        assert len(llama_like(token, add_special_tokens=False).input_ids) == 1
        assert len(byte_level(token, add_special_tokens=False).input_ids) > 1


# ----------------------------------------------------------------- the client's prompt is the training prompt
@pytest.mark.parametrize("name", NAMES)
def test_client_prompt_is_the_training_prompt(name, tokenizer, caplog):
    template = get_template(name)
    with caplog.at_level(logging.WARNING, logger="llava.data.templates"):
        # one question
        prompt = client_ids(client_prompt(name, [("human", QUESTION), ("gpt", None)]), tokenizer)
        ids, labels = template.tokenize(ONE_TURN, tokenizer)
        assert template.prompt_ids(ONE_TURN, tokenizer) == prompt
        assert template.prompt_ids(ONE_TURN[:1], tokenizer) == prompt
        assert ids[: len(prompt)] == prompt and len(ids) > len(prompt)
        assert set(labels[: len(prompt)]) == {IGNORE_INDEX}
        assert labels[len(prompt)] != IGNORE_INDEX  # the answer's first token is learned
        assert prompt.count(IMAGE_TOKEN_INDEX) == 1

        # a second question, after the first answer
        turns = [("human", QUESTION), ("gpt", CAPTION), ("human", SECOND_QUESTION), ("gpt", None)]
        if name in PLAIN_NAMES:  # a client's plain prompt cannot hold the EOS that ends the first answer
            turns[1] = ("gpt", CAPTION + tokenizer.eos_token)
        prompt = client_ids(client_prompt(name, turns), tokenizer)
        ids, labels = template.tokenize(TWO_TURNS, tokenizer)
        assert template.prompt_ids(TWO_TURNS, tokenizer) == prompt
        assert ids[: len(prompt)] == prompt and len(ids) > len(prompt)
    assert "generation prompts will not match" not in caplog.text


@pytest.mark.parametrize("name", NAMES)
def test_labels_cover_each_answer_and_its_end_marker(name, tokenizer):
    template = get_template(name)
    ids, labels = template.tokenize(TWO_TURNS, tokenizer)
    assert len(ids) == len(labels)
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))
    runs = labelled_runs(tokenizer, labels)
    if name in PLAIN_NAMES:  # human turns are dropped: one run, each answer tokenized alone and closed by EOS
        answers = [
            tokenizer(a, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            for a in (CAPTION, SECOND_ANSWER)
        ]
        assert len(runs) == 1 and [label for label in labels if label != IGNORE_INDEX] == answers[0] + answers[1]
        assert template.stop_strings == []
        return
    end = END_OF_ANSWER[name]
    # the space before an answer is its own (SINGLE, TWO, LLAMA_2 layouts); the newline after a closing is not
    assert [run.lstrip() for run in runs] == [CAPTION + end, SECOND_ANSWER + end]
    assert template.stop_strings == [end.strip()]  # what generation stops at is what closes an answer
    # the example turns some templates start with (v0's) are prompt, never labels
    assert "Renewable" not in "".join(runs)


def test_chat_and_chatml_stop_on_their_own_tokens():
    assert get_template("chat").stop_strings == get_template("chatml").stop_strings == []


# --------------------------------------------------------------------------------- lmms-eval's forms
@pytest.mark.parametrize("name", NAMES)
def test_loglikelihood_form_is_the_training_text(name, tokenizer):
    """lmms-eval scores a continuation by filling the open answer: `conv.messages[1][1] = continuation`
    (llava) or `conv.messages[-1][1] = ...` (llava_onevision), then `get_prompt()`."""
    template = get_template(name)
    conv = conv_templates[name].copy()
    conv.append_message(conv.roles[0], QUESTION)
    conv.append_message(conv.roles[1], None)
    context = client_ids(conv.get_prompt(), tokenizer)
    conv.messages[-1][1] = CAPTION
    if not conv_templates[name].messages:
        assert conv.messages[1][1] == CAPTION
    full_text = conv.get_prompt()
    assert full_text == template.render(ONE_TURN)
    full = client_ids(full_text, tokenizer)
    ids, labels = template.tokenize(ONE_TURN, tokenizer)
    if name in PLAIN_NAMES:  # plain closes the answer with the EOS id, which has no text here
        assert ids == full + [tokenizer.eos_token_id]
    else:
        assert ids == full
    assert full[: len(context)] == context  # the continuation is scored after exactly the context


# lmms-eval's stop keyword where it is not what closes an answer: LLaVA's llama_2 layouts put "<s>" or ""
# in `sep` (their answers end with "</s>"), and plain keeps LLaVA's "\n" (a caption holds none).
LMMS_EVAL_KEYWORD_EXCEPTIONS = {
    **dict.fromkeys(["llama_2", "llava_llama_2", "llava_llama_2_simple", "llava_llama_2_mmtag"], "<s>"),
    **dict.fromkeys(["mistral_instruct", "llava_mistral_instruct"], ""),
    **dict.fromkeys(PLAIN_NAMES, "\n"),
}


@pytest.mark.parametrize("name", NAMES)
def test_lmms_eval_stop_keyword(name):
    conv = copy.deepcopy(conv_templates[name])  # lmms-eval deep-copies llama_3 templates
    stop_str = conv.sep if conv.sep_style != SeparatorStyle.TWO else conv.sep2
    if name in LMMS_EVAL_KEYWORD_EXCEPTIONS:
        assert stop_str == LMMS_EVAL_KEYWORD_EXCEPTIONS[name]
    else:
        assert [stop_str.strip()] == get_template(name).stop_strings


# ------------------------------------------------------------------------------------ known layouts
def test_known_layouts():
    def prompt(name):
        return client_prompt(name, [("human", "<image>\nQ"), ("gpt", None)])

    assert prompt("vicuna_v1") == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nQ ASSISTANT:"
    )
    assert prompt("llava_v1").startswith("A chat between a curious human") and prompt("llava_v1").endswith(
        " USER: <image>\nQ ASSISTANT:"
    )
    assert client_prompt("vicuna_v1", [("human", "Q"), ("gpt", "A"), ("human", "Q2"), ("gpt", None)]).endswith(
        "questions. USER: Q ASSISTANT: A</s>USER: Q2 ASSISTANT:"
    )
    assert prompt("llava_v0").endswith("the human's questions.###Human: <image>\nQ###Assistant:")
    assert prompt("qwen_1_5") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nQ<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt("chatml_direct") == (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nQ<|im_end|><|im_start|>assistant\n"
    )
    assert prompt("gemma_instruct") == "<start_of_turn>user\n<image>\nQ<end_of_turn>\n<start_of_turn>model\n"
    assert prompt("mistral_instruct") == "[INST] <image>\nQ [/INST]"
    assert client_prompt("mistral_instruct", [("human", "Q"), ("gpt", "A"), ("human", "Q2"), ("gpt", None)]) == (
        "[INST] Q [/INST] A </s>[INST] Q2 [/INST]"
    )
    assert client_prompt("llava_llama_2_simple", [("human", "Q"), ("gpt", "A"), ("human", "Q2"), ("gpt", None)]) == (
        "[INST] <<SYS>>\nAnswer the questions about the visual content that the user provides.\n<</SYS>>\n\n"
        "Q [/INST] A </s><s>[INST] Q2 [/INST]"
    )
    assert prompt("llava_llama_3").endswith(
        "natural language.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<image>\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert prompt("plain") == "<image>"  # ours: the question is not part of a caption LM's input
    assert prompt("default").startswith(default_conversation.system + "###Human: What are the key differences")


# ------------------------------------------------------------------------------ the Conversation object
def test_conversation_surface():
    template = conv_templates["vicuna_v1"]
    conv = template.copy()
    conv.append_message(conv.roles[0], ("<image>\nQ", "image.png", "Default"))  # LLaVA's (text, image, mode)
    conv.append_message(conv.roles[1], None)
    assert template.messages == [] and len(conv.messages) == 2  # the copy is independent
    assert conv.get_prompt().endswith("USER: <image>\nQ ASSISTANT:")
    copied = conv.copy()
    copied.messages[1][1] = "A"
    assert conv.messages[1][1] is None
    assert copied.dict() == {
        "system": template.system,
        "roles": ("USER", "ASSISTANT"),
        "messages": [["USER", "<image>\nQ"], ["ASSISTANT", "A"]],
        "offset": 0,
        "sep": " ",
        "sep2": "</s>",
    }
    assert (conv.sep_style, conv.version, conv.offset) == (SeparatorStyle.TWO, "v1", 0)
    assert [m.name for m in SeparatorStyle] == [
        "SINGLE",
        "TWO",
        "MPT",
        "PLAIN",
        "CHATML",
        "LLAMA_2",
        "LLAMA_3",
        "QWEN",
        "GEMMA",
    ]
    assert default_conversation is conv_templates["default"] and default_conversation.offset == 2
    custom = Conversation(system="S", roles=("Q", "R"), messages=[], offset=0, sep_style=SeparatorStyle.QWEN, sep="|")
    with pytest.raises(ValueError, match="SeparatorStyle.QWEN has no layout"):
        custom.get_prompt()


def test_a_client_builds_prompts_without_torch():
    # LLaVA's clients import llava.conversation to build a prompt: it needs no model code.
    code = "import sys, llava.conversation; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_system_turn_needs_a_chat_template(byte_level):
    conv = [{"from": "system", "value": "Sii breve."}] + ONE_TURN
    with pytest.raises(ValueError, match="vicuna_v1 has its own system prompt.*--version chat or chatml"):
        get_template("vicuna_v1").tokenize(conv, byte_level)
    ids, _ = get_template("plain").tokenize(conv, byte_level)  # plain drops system text, like human text
    assert ids == get_template("plain").tokenize(ONE_TURN, byte_level)[0]


# -------------------------------------------------------------------------------------------- plain
def test_plain_on_a_sentencepiece_style_tokenizer(llama_like):
    tok, plain = llama_like, get_template("plain")
    caption = tok(CAPTION, add_special_tokens=False).input_ids
    ids, labels = plain.tokenize(ONE_TURN, tok)
    assert ids == [tok.bos_token_id, IMAGE_TOKEN_INDEX] + caption + [tok.eos_token_id]
    assert labels == [IGNORE_INDEX, IGNORE_INDEX] + caption + [tok.eos_token_id]
    # each answer is tokenized on its own: a second text-only answer starts a word as the first does
    text_only = [{"from": "human", "value": "Descrivi."}, {"from": "gpt", "value": CAPTION}] * 2
    ids, _ = plain.tokenize(text_only, tok)
    assert ids == [tok.bos_token_id] + caption + [tok.eos_token_id] + caption + [tok.eos_token_id]


# ------------------------------------------------------------------ a tokenizer that breaks the prefix rule
def test_a_prompt_the_tokenizer_splits_differently_is_reported(tmp_path, caplog):
    """GPT-2's pre-tokenizer keeps a final "\\n\\n" whole but splits "\\n\\n" + word into "\\n", "\\n": with
    a "\\n\\n" token, Llama-3's layout ends the prompt with a token the training text never has."""
    folder = train_tokenizer(tmp_path / "tok", CORPUS + ["fine\n\n inizio"] * 20)
    tok = AutoTokenizer.from_pretrained(folder)
    assert len(tok("\n\n", add_special_tokens=False).input_ids) == 1
    template = get_template("llava_llama_3")
    with caplog.at_level(logging.WARNING, logger="llava.data.templates"):
        ids, _ = template.tokenize(ONE_TURN, tok)
    prompt = template.prompt_ids(ONE_TURN, tok)
    assert ids[: len(prompt)] != prompt
    assert "llava_llama_3: the tokenizer splits the prompt before answer 0 differently" in caplog.text
