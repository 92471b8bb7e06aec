"""Words as this project counts them for BabyLM's word limits and milestones: the whitespace-separated
pieces of a text once its coordinates are taken out. Training counts the words of the answer tokens it
trains on (llava/train/milestones.py, through `words_of_ids`); data preparation counts a text's
(`count_words`), so that a word limit set while preparing data and the milestones training crosses
agree, with or without coordinates in the text.

A coordinate is not a word: a box, span or time point in numbers (grounded_samples.py), a coordinate
placeholder or bin token (`<WIDTH-INPUT>`, `<TEMP-042>`), a box or span of them with its brackets, each
with the comma or colon right after it (LLaVA-ST's layouts: `{s, e}, caption`, `<TEMP-OUTPUT>: [box]`).
Any other text counts as before: `len(text.split())`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .grounded_samples import PATTERNS

COORDINATE_TOKEN = r"<(?:TEMP|HEIGHT|WIDTH)-(?:INPUT|OUTPUT|\d+)>"
_TOKEN_GROUP = rf"[\[{{](?:\s*,?\s*{COORDINATE_TOKEN})+\s*[\]}}]"
_NUMBERS = "|".join(PATTERNS[kind] for kind in ("box", "span", "time"))
NOT_WORDS = re.compile(rf"(?:{_NUMBERS}|{_TOKEN_GROUP}|{COORDINATE_TOKEN})(?:\s*[,:])?")
COORDINATE_TOKEN_RE = re.compile(COORDINATE_TOKEN)


def count_words(text: str) -> int:
    """Words of `text`, its coordinates left out."""
    return len(NOT_WORDS.sub(" ", text).split())


def words_of_ids(rows: Iterable[list[int]], tokenizer) -> int:
    """Words of token ids (each row an answer's tokens), decoded without special tokens. Coordinate tokens
    are special tokens too, but are decoded here, so that `count_words` takes out their brackets with
    them (skipped, they would leave a `[]` that counts as a word)."""
    skipped = set(tokenizer.all_special_ids)
    coordinates = set()
    for token_id, token in tokenizer.added_tokens_decoder.items():
        if COORDINATE_TOKEN_RE.fullmatch(token.content):
            coordinates.add(token_id)
        elif token.special:
            skipped.add(token_id)
    skipped -= coordinates
    words = 0
    for ids in rows:
        if not coordinates:  # the usual case, and what every run without coordinates has always counted
            words += len(tokenizer.decode(ids, skip_special_tokens=True).split())
            continue
        kept = [i for i in ids if i not in skipped]
        words += count_words(tokenizer.decode(kept, skip_special_tokens=False))
    return words
