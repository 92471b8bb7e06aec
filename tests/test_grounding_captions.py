"""ELC's caption metrics (llava.eval.grounding_captions), through pycocoevalcap as LLaVA-ST runs it: BLEU-1
and ROUGE-L worked out by hand on tiny tokenized cases; one Bleu(4) standing for LLaVA-ST's Bleu(1) ...
Bleu(4); llava.eval.metrics' BLEU-4 and CIDEr-D agreeing with pycocoevalcap's on the same words; and, with
java, the whole path: the PTB tokenizer, METEOR, one prediction against one reference per item. Without
java those tests skip on a developer's machine and fail in CI (tests/tiers.py), naming java."""

import math
import shutil

import pytest

from llava.errors import UserError
from llava.eval import grounding_captions
from llava.eval.grounding_captions import METRICS, MissingScorer, caption_scores, scores_of_tokenized
from llava.eval.metrics import bleu4, cider, tokenize_caption

from tiers import require_installed

BETA2 = 1.2**2  # pycocoevalcap's ROUGE-L weighs recall by beta = 1.2


def needs_java():
    if shutil.which("java") is None:
        require_installed(
            "java",
            ".ci/setup_java.sh, or apt-get install default-jre-headless",
            "java not found on PATH (pycocoevalcap's PTB tokenizer and METEOR run on it)",
        )


def rouge_l(precision, recall):
    return (1 + BETA2) * precision * recall / (recall + BETA2 * precision)


def test_bleu_1_by_hand_is_corpus_level():
    gts = {0: ["the cat is on the mat"], 1: ["the cat is on the mat"]}
    res = {0: ["the cat sat on the mat"], 1: ["the cat"]}
    scores = scores_of_tokenized(gts, res, meteor=False)
    # Clipped unigram matches 5 of 6 and 2 of 2: 7 of 8 over the corpus; 8 words against 12 of reference,
    # brevity penalty exp(1 - 12/8). (The mean of the two sentences' BLEU-1 would be far higher.)
    assert scores["Bleu_1"] == pytest.approx(7 / 8 * math.exp(1 - 12 / 8), rel=1e-8)
    # The closest reference length counts: with a 2-word reference beside the long one, item 1 is not short.
    gts[1] = ["the cat is on the mat", "a cat"]
    assert scores_of_tokenized(gts, res, meteor=False)["Bleu_1"] == pytest.approx(7 / 8, rel=1e-8)


def test_rouge_l_by_hand_is_the_mean_over_items():
    gts = {0: ["the cat is on the mat"], 1: ["the cat is on the mat"], 2: ["a b c d e f", "a x"]}
    res = {0: ["the cat sat on the mat"], 1: ["the cat"], 2: ["a b c"]}
    # item 0: LCS "the cat on the mat", 5 of 6 both ways; item 1: LCS 2, precision 1, recall 2/6;
    # item 2: the best precision (1, from either) and the best recall (1/2, from either), each on its own.
    expected = [rouge_l(5 / 6, 5 / 6), rouge_l(1.0, 2 / 6), rouge_l(1.0, 1 / 2)]
    assert expected[0] == pytest.approx(5 / 6)
    scores = scores_of_tokenized(gts, res, meteor=False)
    assert scores["ROUGE_L"] == pytest.approx(sum(expected) / 3, rel=1e-12)


CORPUS = (
    [
        "un gatto nero corre sul prato verde",
        "L'uomo cammina lungo la strada di sera.",
        "una donna legge un libro in giardino",
    ],
    [
        ["un gatto nero corre sul prato", "il gatto nero corre nel prato verde"],
        ["l'uomo cammina lungo la strada", "Un uomo cammina per la strada di sera"],
        ["una donna legge un libro nel giardino"],
    ],
)


def _tokenized_like_metrics(hyps, refs):
    def joined(text):
        return " ".join(tokenize_caption(text))

    gts = {i: [joined(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [joined(h)] for i, h in enumerate(hyps)}
    return gts, res


def test_one_bleu_4_gives_llava_st_s_bleu_1_to_4():
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = _tokenized_like_metrics(*CORPUS)
    scores = scores_of_tokenized(gts, res, meteor=False)
    for n in range(1, 5):
        alone, _ = Bleu(n).compute_score(gts, res, verbose=0)
        assert scores[f"Bleu_{n}"] == alone[-1]
    assert 0 < scores["Bleu_4"] < scores["Bleu_3"] < scores["Bleu_2"] < scores["Bleu_1"] < 1


def test_the_captioning_metrics_agree_with_pycocoevalcap_on_the_same_words():
    # llava.eval.metrics scores captioning with its own tokenization; given those tokens, pycocoevalcap
    # computes the same BLEU-4 (sacrebleu's, on 0..100; every n-gram order has a match here, where the two
    # smoothings agree) and the same CIDEr-D.
    hyps, refs = CORPUS
    gts, res = _tokenized_like_metrics(hyps, refs)
    scores = scores_of_tokenized(gts, res, meteor=False)
    assert bleu4(hyps, refs) == pytest.approx(100 * scores["Bleu_4"], rel=1e-7)
    assert cider(hyps, refs) == pytest.approx(scores["CIDEr"], rel=1e-9)
    assert scores["CIDEr"] > 1  # not a vacuous agreement


def test_bad_references_are_refused():
    with pytest.raises(ValueError, match="2 predicted captions but 1"):
        caption_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="blank"):
        caption_scores(["a"], [" "])
    with pytest.raises(ValueError, match="no captions"):
        caption_scores([], [])


def test_without_java_the_error_names_it_and_what_installs_it(monkeypatch):
    monkeypatch.setattr(grounding_captions.shutil, "which", lambda name: None)
    with pytest.raises(MissingScorer) as stopped:
        caption_scores(["a man rides"], ["a man rides a horse"])
    assert isinstance(stopped.value, UserError)
    assert "java not found on PATH" in str(stopped.value) and "default-jre-headless" in str(stopped.value)
    with pytest.raises(MissingScorer, match="java"):
        scores_of_tokenized({0: ["a"]}, {0: ["a"]}, meteor=True)


@pytest.mark.slow
def test_the_ptb_tokenizer_with_java():
    needs_java()
    # lowercased, punctuation dropped, each caption on its own line whatever line breaks it holds
    tokenized = grounding_captions.ptb_tokenize({0: ["A man, riding!"], 1: [""], 2: ["L'uomo  corre.\nVeloce", "..."]})
    assert tokenized == {0: ["a man riding"], 1: [""], 2: ["l'uomo corre veloce", ""]}


@pytest.mark.slow
def test_caption_scores_with_java_tokenize_then_score_each_item_against_its_reference():
    needs_java()
    predictions = ["A man rides a brown horse.", "Two women dance!", "", "The dog sleeps on the sofa"]
    references = ["a man rides a brown horse", "a child plays football", "a cat jumps", ["the dog sleeps on a sofa"]]
    scores = caption_scores(predictions, references)
    assert list(scores) == list(METRICS)
    # The same words, as the PTB tokenizer writes them, scored without it: item i against reference i only.
    gts = {0: ["a man rides a brown horse"], 1: ["a child plays football"], 2: ["a cat jumps"]}
    gts[3] = ["the dog sleeps on a sofa"]
    res = {0: ["a man rides a brown horse"], 1: ["two women dance"], 2: [""], 3: ["the dog sleeps on the sofa"]}
    assert scores == pytest.approx(scores_of_tokenized(gts, res), rel=1e-12)
    # unigrams: 6 of 6, 0 of 3, none, 5 of 6, against 6 + 4 + 3 + 6 closest reference words
    assert scores["Bleu_1"] == pytest.approx(11 / 15 * math.exp(1 - 19 / 15), rel=1e-8)
    assert 0.0 < scores["METEOR"] < 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "module, jar, run, why",
    [
        # java's own words: the tokenizer's class is not on the class path; METEOR's jar is not there
        ("pycocoevalcap.tokenizer.ptbtokenizer", "STANFORD_CORENLP_3_4_1_JAR", "tokenizer", "ClassNotFoundException"),
        ("pycocoevalcap.meteor.meteor", "METEOR_JAR", "meteor", "no-such.jar"),
    ],
)
def test_a_java_scorer_that_fails_is_one_line_with_java_s_reason(monkeypatch, module, jar, run, why):
    needs_java()
    monkeypatch.setattr(f"{module}.{jar}", "no-such.jar")
    with pytest.raises(grounding_captions.ScorerFailed) as stopped:
        if run == "tokenizer":
            grounding_captions.ptb_tokenize({0: ["a man"], 1: ["a dog"]})
        else:
            scores_of_tokenized({0: ["a man"]}, {0: ["a man"]})
    message = str(stopped.value)
    assert "gave no" in message and why in message and "\n" not in message
