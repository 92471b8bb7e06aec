"""Corpus caption metrics for (Italian) video captioning: BLEU-4 and CIDEr-D.

Both functions take ``hypotheses[i]`` (one generated caption) and ``references[i]`` (a non-empty
list of reference captions for the same clip; the count may vary from clip to clip).

Scales, as the usual tools report them:
- ``bleu4`` is sacrebleu's corpus BLEU on 0..100.
- ``cider`` is the COCO-caption CIDEr-D value, 0..10 per clip (papers usually print it x100,
  so a returned 0.853 is "CIDEr 85.3").

Tokenization (``tokenize_caption``), used by ``cider`` and by ``bleu4`` by default, so that both
metrics see the same words: lowercase, typographic apostrophes mapped to "'", then word tokens
(``\\w+``, Unicode-aware, so accented letters stay). All other punctuation is dropped. An
elision apostrophe stays on the first word, which becomes its own token, so that the article or
preposition matches across words: "L'alto dell'uomo" -> ["l'", "alto", "dell'", "uomo"]. An
apostrophe not followed by a letter is dropped: "un po'" -> ["un", "po"].
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from sacrebleu.metrics import BLEU

__all__ = ["bleu4", "cider", "tokenize_caption"]

_TOKEN = re.compile(r"\w+'(?=\w)|\w+")


def tokenize_caption(text: str) -> list[str]:
    """Lowercased word tokens of one caption; see the module docstring for the rules."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return _TOKEN.findall(text)


def _validate(hypotheses: Sequence[str], references: Sequence[Sequence[str]]):
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if not hypotheses:
        raise ValueError("nothing to score: empty corpus")
    for i, refs in enumerate(references):
        # A bare string would be iterated as characters, each one a "reference".
        if isinstance(refs, str):
            raise ValueError(f"references[{i}] must be a list of strings, not a string")
        if not refs:
            raise ValueError(f"references[{i}] is empty: every hypothesis needs a reference")
        # A blank reference is a data bug; for BLEU it would also be a real zero-length
        # reference that can win the closest-length choice of the brevity penalty.
        if any(not r.strip() for r in refs):
            raise ValueError(f"references[{i}] holds a blank reference")


def bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]], tokenize: str | None = None) -> float:
    """Corpus BLEU-4 on 0..100 by sacrebleu (exp smoothing, closest-reference brevity penalty).

    ``tokenize=None`` (default) applies ``tokenize_caption`` and sacrebleu's "none" tokenizer;
    a sacrebleu tokenizer name (e.g. "13a") scores the raw, case-sensitive text with it instead.
    """
    _validate(hypotheses, references)
    if tokenize is None:
        hypotheses = [" ".join(tokenize_caption(h)) for h in hypotheses]
        references = [[" ".join(tokenize_caption(r)) for r in refs] for refs in references]
        tokenize = "none"
    # sacrebleu wants reference streams (stream k = k-th reference of every segment). Shorter
    # lists are padded with None, which sacrebleu drops; '' would count as a real empty reference.
    width = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    metric = BLEU(tokenize=tokenize, max_ngram_order=4)
    return float(metric.corpus_score(list(hypotheses), streams).score)


def _ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def cider(hypotheses: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D, matching pycocoevalcap's ``Cider`` (the COCO caption evaluation) number for number.

    Per clip and n-gram order: tf-idf vectors (idf from the document frequency of each n-gram
    over the clips' reference sets), clipped cosine ``sum min(h, r) * r / (|h| |r|)``, times the
    Gaussian length penalty ``exp(-delta^2 / (2 sigma^2))``; averaged over orders 1..n and over
    the clip's references, times 10; the corpus value is the mean over clips.
    The idf comes from this corpus, so a single clip always scores 0 (every idf is log 1 - log 1),
    and n-grams found in every clip's references weigh nothing: score a whole test set at once.
    """
    _validate(hypotheses, references)
    hyp_counts = [_ngram_counts(tokenize_caption(h), n) for h in hypotheses]
    ref_counts = [[_ngram_counts(tokenize_caption(r), n) for r in refs] for refs in references]
    df = Counter(g for refs in ref_counts for g in set().union(*refs))
    log_clips = math.log(len(hypotheses))

    def vectorize(counts: Counter):
        vec: list[dict] = [{} for _ in range(n)]
        for g, tf in counts.items():
            # Raw term counts; an n-gram unseen in the references gets df 1, as in the reference.
            vec[len(g) - 1][g] = tf * (log_clips - math.log(max(1.0, df[g])))
        norms = [math.sqrt(sum(w * w for w in v.values())) for v in vec]
        # Word count. (The reference counts bigrams, max(words - 1, 0): the same differences
        # whenever both captions have a word, and a 0-word caption scores 0 anyway.)
        length = sum(tf for g, tf in counts.items() if len(g) == 1)
        return vec, norms, length

    scores = []
    for hyp, refs in zip(hyp_counts, ref_counts):
        h_vec, h_norm, h_len = vectorize(hyp)
        total = 0.0
        for ref in refs:
            r_vec, r_norm, r_len = vectorize(ref)
            penalty = math.exp(-((h_len - r_len) ** 2) / (2 * sigma**2))
            for k in range(n):
                if h_norm[k] and r_norm[k]:
                    # Clipping (min) stops repeating a rare n-gram from inflating the score.
                    dot = sum(min(w, r_vec[k].get(g, 0.0)) * r_vec[k].get(g, 0.0) for g, w in h_vec[k].items())
                    total += dot / (h_norm[k] * r_norm[k]) * penalty
        scores.append(10.0 * total / (n * len(refs)))
    return sum(scores) / len(scores)
