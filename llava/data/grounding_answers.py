"""A model's generated answer read back as a box, a span or a tube (a box per moment), in the two writings
a model can use, for scoring (llava.eval.grounding_metrics) and for drawing on the web page (llava.serve.web_grounding).
It lives in the data layer, beside grounding_tasks.py that writes these answers, so that both may import it.

Coordinate tokens, as LLaVA-ST's models write them (its inference/src/utils.py: `replace_and_normalize`,
then `parse_box_from_text`, `parse_span_from_text`, `parse_stpair_from_text`):
- a box `[<WIDTH-012><HEIGHT-034><WIDTH-056><HEIGHT-078>]`: x1, y1, x2, y2, in that order of axes;
- a span `{<TEMP-010><TEMP-050>}`: start, end;
- a tube, as STVG, SVG and ELC answers write it: pairs of a moment and a box, `<TEMP-012>: [...]`.
A bin token `<AXIS-k>` stands for k / (BINS - 1) (coordinates.py), so `<WIDTH-099>` is 1.0. Spaces
between the tokens are allowed (LLaVA-ST drops them before it parses); commas between them are not.

Plain digits, the control condition that writes coordinates as ordinary text: `[0.12,0.34,0.56,0.78]`,
`{0.1,0.5}` and pairs `{0.12}: [...]` (as llava.data.grounding_tasks writes them; `0.12: [...]` too),
numbers as LLaVA-ST's patterns read them (no sign, no exponent).

As in LLaVA-ST, the first box (span) written in the answer is the prediction, and a tube is every pair in
the answer. What this project adds: a box of tokens must have its axes in order (a `<HEIGHT-...>` where a
width belongs is no box), and a box or span whose values are not coordinates (outside [0, 1], an end before
its start) is returned as None. None means the model wrote no usable answer: grounding_metrics scores it as
a counted miss. ELC's event caption is cut out of an answer as LLaVA-ST's metrics cut it (`elc_caption`).
Nothing here raises on any text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ..modeling.coordinates import BINS

__all__ = ["parse_box", "parse_span", "parse_tube", "token_value", "well_formed"]

# LLaVA-ST's number: digits, optionally a fraction.
_NUMBER = r"\d+(?:\.\d+)?"


def _token(axis: str) -> str:
    # Any count of digits: a bin past the last one still reads as a value, which then fails the range check.
    return rf"<{axis}-(\d+)>"


def _tokens(*axes: str) -> str:
    return r"\s*".join(_token(axis) for axis in axes)


def _numbers(count: int) -> str:
    return r"\s*,\s*".join([f"({_NUMBER})"] * count)


_W, _H, _T = "WIDTH", "HEIGHT", "TEMP"
_BOX_TOKENS = re.compile(rf"\[\s*{_tokens(_W, _H, _W, _H)}\s*\]")
_BOX_DIGITS = re.compile(rf"\[\s*{_numbers(4)}\s*\]")
_SPAN_TOKENS = re.compile(rf"\{{\s*{_tokens(_T, _T)}\s*\}}")
_SPAN_DIGITS = re.compile(rf"\{{\s*{_numbers(2)}\s*\}}")
# A moment, a colon, then whatever sits in the brackets: a pair whose box is written badly still names a
# moment the model claimed, which counts against it (grounding_metrics' tube rule), so the box is read
# on its own.
_PAIR = re.compile(rf"(?:{_token(_T)}|\{{\s*({_NUMBER})\s*\}}|(?<![\d.])({_NUMBER}))\s*:\s*(\[[^\[\]]*\])")


def token_value(index: str | int) -> float:
    """A bin token's value: bin k of BINS stands for k / (BINS - 1)."""
    return int(index) / (BINS - 1)


def _first(text: str, tokens: re.Pattern, digits: re.Pattern) -> list[float] | None:
    """The values of the earlier of the first token-written and the first digit-written match."""
    matches = [m for m in (tokens.search(text), digits.search(text)) if m is not None]
    if not matches:
        return None
    match = min(matches, key=lambda m: m.start())
    if match.re is tokens:
        return [token_value(k) for k in match.groups()]
    return [float(v) for v in match.groups()]


def well_formed(values, size: int) -> bool:
    """`size` finite numbers in [0, 1], each end at or after its start."""
    if values is None or not isinstance(values, Sequence) or len(values) != size:
        return False
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return False
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in numbers):
        return False
    return all(numbers[i] <= numbers[i + size // 2] for i in range(size // 2))


def _checked(values: list[float] | None, size: int) -> list[float] | None:
    return values if well_formed(values, size) else None


def parse_box(text) -> list[float] | None:
    """The answer's first box, [x1, y1, x2, y2] in [0, 1], or None."""
    if not isinstance(text, str):
        return None
    return _checked(_first(text, _BOX_TOKENS, _BOX_DIGITS), 4)


def parse_span(text) -> list[float] | None:
    """The answer's first span, [start, end] in [0, 1], or None."""
    if not isinstance(text, str):
        return None
    return _checked(_first(text, _SPAN_TOKENS, _SPAN_DIGITS), 2)


def _pair_box(bracketed: str) -> list[float] | None:
    match = _BOX_TOKENS.fullmatch(bracketed) or _BOX_DIGITS.fullmatch(bracketed)
    if match is None:
        return None
    if match.re is _BOX_TOKENS:
        return _checked([token_value(k) for k in match.groups()], 4)
    return _checked([float(v) for v in match.groups()], 4)


def parse_tube(text) -> dict[float, list[float] | None] | None:
    """Every `moment: [box]` pair of the answer, {moment in [0, 1] of the clip: box}, or None where the
    answer holds no pair. A pair whose box is written badly keeps its moment with None for the box (a
    counted miss that still counts in the union of frames); a moment written twice keeps its last box, as
    LLaVA-ST's dict does. A moment past the clip's end (a digit above 1) is kept as written: it lands on no
    true frame and counts against the prediction."""
    if not isinstance(text, str):
        return None
    tube = {}
    for match in _PAIR.finditer(text):
        index, braced, bare, bracketed = match.groups()
        moment = token_value(index) if index is not None else float(braced or bare)
        tube[moment] = _pair_box(bracketed)
    return tube or None


# A full stop that is not a decimal point (a digit on both sides): LLaVA-ST cuts its ELC caption at the
# first ".", which in a digit-written answer ("Ends in 0.50, ...") would fall inside a number. Token-written
# answers hold no digits beside a full stop, so for them this is LLaVA-ST's cut exactly.
_FULL_STOP = re.compile(r"(?<!\d)\.|\.(?!\d)")


def elc_caption(text) -> str:
    """The event caption of an ELC answer as LLaVA-ST's metrics.py extracts it: the text before the first
    full stop, after the last comma in it ("Ends in <TEMP-050>, a man rides a horse. Object ..." ->
    " a man rides a horse"). A caption with commas of its own keeps only its last part, as there."""
    if not isinstance(text, str):
        return ""
    return _FULL_STOP.split(text, maxsplit=1)[0].split(",")[-1]
