"""Caption metrics against published and independently computed values."""

import math
import random

import pytest

from llava.eval.metrics import bleu4, cider, tokenize_caption

# The worked example of the sacrebleu README ("Using SacreBLEU from Python"), regrouped from its
# reference streams into one list of references per hypothesis.
SACREBLEU_SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
SACREBLEU_REFS = [
    ["The dog bit the man.", "The dog had bit the man."],
    ["It was not unexpected.", "No one was surprised."],
    ["The man bit him first.", "The man had bitten the dog."],
]


def test_tokenize_caption_italian():
    assert tokenize_caption("L'alto dell\u2019uomo, sulla SPIAGGIA!") == [
        "l'",
        "alto",
        "dell'",
        "uomo",
        "sulla",
        "spiaggia",
    ]
    assert tokenize_caption("Un po' di più: c'è 'ciao'.") == ["un", "po", "di", "più", "c'", "è", "ciao"]
    assert tokenize_caption("") == []


# ---------------------------------------------------------------- BLEU-4


def test_bleu_sacrebleu_readme_example():
    # README: "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ...)" with tok:13a, case:mixed.
    assert bleu4(SACREBLEU_SYS, SACREBLEU_REFS, tokenize="13a") == pytest.approx(48.53, abs=0.005)


def test_bleu_sacrebleu_readme_variable_references():
    # README, "Variable Number of References": the first reference of the first sentence
    # removed gives "BLEU = 29.44 82.4/42.9/27.3/12.5 (BP = 0.889 ...)".
    refs = [SACREBLEU_REFS[0][1:], *SACREBLEU_REFS[1:]]
    assert bleu4(SACREBLEU_SYS, refs, tokenize="13a") == pytest.approx(29.44, abs=0.005)


def test_bleu_default_normalization_hand_computed():
    # After tokenize_caption: hyp "il gatto nero dorme" (4 words), ref adds "sul divano" (6).
    # Precisions 4/4, 3/3, 2/2, 1/1 = 1; BP = exp(1 - 6/4) = exp(-0.5); BLEU = 100 * 0.60653.
    # (Raw "13a" would miss "Il" vs "il" and count "." as a token.)
    score = bleu4(["Il gatto nero dorme."], [["il gatto nero dorme sul divano"]])
    assert score == pytest.approx(100 * math.exp(-0.5), rel=1e-9)


def test_bleu_padding_adds_no_phantom_reference():
    # Duplicating a reference changes nothing in BLEU (max counts, closest length). A '' pad
    # would: for the one-word hypothesis its length 0 would be "closest" and hide the brevity
    # penalty. Only the None padding keeps the two corpora equal.
    hyps = ["gatto", "un cane corre nel prato verde"]
    ragged = [["un gatto dorme sul divano"], ["un cane corre nel prato", "il cane corre nel prato verde"]]
    doubled = [["un gatto dorme sul divano"] * 2, ragged[1]]
    assert bleu4(hyps, ragged) == pytest.approx(bleu4(hyps, doubled), rel=1e-12)


def test_bleu_identical_and_empty():
    refs = [["una donna cammina sulla spiaggia"], ["due bambini giocano a calcio nel parco"]]
    assert bleu4([r[0] for r in refs], refs) == pytest.approx(100.0)
    assert bleu4(["", ""], refs) == 0.0


# ---------------------------------------------------------------- CIDEr-D


def test_cider_hand_computed():
    # Two clips, N = 2, so idf(g) = ln 2 - ln df(g).
    #   A: hyp "un gatto",  ref "un gatto nero";   B: hyp "un cane", ref "un cane".
    # "un" is in both reference sets: idf 0. Every other n-gram: df 1, idf ln 2 (call it w).
    # A, 1-grams: h = {un:0, gatto:w}, r = {un:0, gatto:w, nero:w}
    #   cos = w*w / (w * w*sqrt 2) = 1/sqrt 2
    # A, 2-grams: h = {un gatto:w}, r = {un gatto:w, gatto nero:w}: cos = 1/sqrt 2
    # A, 3/4-grams: the hypothesis has none: 0.
    # A, length: 2 vs 3 words, delta = -1: penalty exp(-1/72).
    #   A = 10 * (2/sqrt 2)/4 * exp(-1/72) = 3.48677
    # B: identical, 1- and 2-gram cos 1, no 3/4-grams, delta 0: B = 10 * 2/4 = 5.
    # CIDEr = (A + B) / 2 = 4.24338
    expected = (10 * (2 / math.sqrt(2)) / 4 * math.exp(-1 / 72) + 5.0) / 2
    assert expected == pytest.approx(4.243384, abs=1e-6)
    assert cider(["un gatto", "un cane"], [["un gatto nero"], ["un cane"]]) == pytest.approx(expected, rel=1e-12)


def test_cider_identical_single_reference_hits_maximum():
    # Clipped cosine <= 1 and penalty <= 1, so a clip scores at most 10; it reaches 10 when the
    # hypothesis equals its only reference and every order 1..4 has non-zero tf-idf (>= 4 words,
    # n-grams not shared by all clips).
    refs = [
        ["una donna cammina sulla spiaggia"],
        ["due bambini giocano a calcio"],
        ["un uomo taglia il pane in cucina"],
    ]
    assert cider([r[0] for r in refs], refs) == pytest.approx(10.0, rel=1e-12)
    # Punctuation and case do not matter after tokenize_caption.
    assert cider(
        ["Una donna cammina, sulla spiaggia!", "DUE bambini giocano a calcio.", "un uomo taglia il pane in cucina"],
        refs,
    ) == pytest.approx(10.0, rel=1e-12)


def test_cider_degenerate_inputs():
    refs = [["un gatto nero"], ["un cane corre"]]
    assert cider(["", ""], refs) == 0.0
    # One empty hypothesis scores 0 for its clip and leaves the other clip's score alone:
    # "un" is in both reference sets (idf 0), the rest has idf ln 2; the identical clip has
    # cos 1 for 1-, 2- and 3-grams and no 4-gram: 10 * 3/4 = 7.5, so CIDEr = (0 + 7.5) / 2.
    assert cider(["", "un cane corre"], refs) == pytest.approx(3.75, rel=1e-12)
    # A single clip always scores 0: its idf is log 1 - log 1 for every n-gram.
    assert cider(["un gatto nero"], [["un gatto nero"]]) == 0.0


@pytest.mark.parametrize("metric", [bleu4, cider])
def test_invalid_inputs(metric):
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        metric(["a b", "c d"], [["a b"]])
    with pytest.raises(ValueError, match="empty corpus"):
        metric([], [])
    with pytest.raises(ValueError, match="must be a list"):
        metric(["a b"], ["a b"])
    with pytest.raises(ValueError, match="is empty"):
        metric(["a b"], [[]])
    with pytest.raises(ValueError, match="blank"):
        metric(["a b"], [["a b", " "]])


def _random_corpus(rng):
    # A tiny vocabulary forces repeated n-grams (clipping) and shared n-grams (idf); lengths
    # 0 and 1 check that word counts match the reference's bigram-based length.
    vocab = ["un", "gatto", "cane", "nero", "corre", "sul", "prato", "l'", "uomo"]

    def sentence():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 9)))

    clips = rng.randint(2, 12)
    hyps = [sentence() for _ in range(clips)]
    refs = [[sentence() or "gatto" for _ in range(rng.randint(1, 5))] for _ in range(clips)]
    return hyps, refs


@pytest.mark.parametrize("seed", range(20))
def test_cider_matches_pycocoevalcap(seed):
    from pycocoevalcap.cider.cider import Cider  # the reference implementation (the dev extra installs it)

    hyps, refs = _random_corpus(random.Random(seed))

    # pycocoevalcap scores pre-tokenized, space-joined strings (its PTB tokenizer needs Java).
    def joined(s):
        return " ".join(tokenize_caption(s))

    gts = {i: [joined(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [joined(h)] for i, h in enumerate(hyps)}
    expected, _ = Cider().compute_score(gts, res)
    assert cider(hyps, refs) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
