"""Coordinates in a sample: boxes, spans and time points, read as LLaVA-ST's placeholders and `variables`.

A sample may carry, beside LLaVA's `{"id", "video" | "image", "conversations"}`, LLaVA-ST's `variables`:
six lists (`temporal_input_locations`, ..., see llava/modeling/coordinate_tokens.py), each holding the
values of one placeholder (`<TEMP-INPUT>`, ...) in the order that placeholder appears in the text, turn
after turn. Coordinates may be written two ways, in the same sample too:

a. as placeholders in the text, with their values in `variables` (LLaVA-ST's training files);
b. as numbers in the text, which `ground_turns` turns into placeholders, appending each number to
   `variables` at its place in text order. Exactly three patterns are coordinates (a number is an
   optional sign, digits and an optional decimal part; no exponents; spaces allowed around the commas):
   - a box, four numbers in square brackets `[x1, y1, x2, y2]`: x across the width, y down the height
     -> `[<WIDTH-*><HEIGHT-*><WIDTH-*><HEIGHT-*>]` (LLaVA-ST's `format_box_in_text` layout);
   - a span, two numbers in braces `{s, e}`: start and end -> `{<TEMP-*><TEMP-*>}`;
   - a time point, one number in braces `{t}` -> a bare `<TEMP-*>`, as LLaVA-ST writes a single time
     ("Starts in <TEMP-INPUT>", "<TEMP-OUTPUT>: [box]" in its grounding answers).
   `*` is INPUT in human (and system) turns, OUTPUT in answers. Any other bracket or number, a list of
   three or five numbers say, stays text. Numbers are read so only for a model with coordinate tokens
   (a run with --coordinate_tokens or --stage 2, a checkpoint that has them): a text corpus holding
   `[1, 2, 3, 4]` or `{3}` trains a model without them on that text as it is.

Every value is a fraction in [0, 1]: of the width, the height, or the clip's duration. A sample is refused
(one line naming it, listed with the data's other problems before training) where a box or span value
lies outside [0, 1], a box has x2 < x1 or y2 < y1, a span ends before it starts, `variables` has a key
that is none of the six, or the counts differ: a value that names no placeholder, or a placeholder
without its value. A sample without coordinates is returned unchanged (`ground_turns` gives None).
"""

from __future__ import annotations

import math
import re

from ..errors import UsageError
from ..modeling.coordinate_tokens import PLACEHOLDERS, VARIABLE_KEYS, empty_variables, values_from_variables
from ..modeling.coordinates import input_placeholder, output_placeholder

KEY_OF = {placeholder: key for placeholder, (_, key) in PLACEHOLDERS.items()}
SPEAKERS = {"user": "human", "assistant": "gpt", "system": "system"}

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
ONE_PLACEHOLDER = r"<(?:TEMP|HEIGHT|WIDTH)-(?:INPUT|OUTPUT)>"
_COMMA = r"\s*,\s*"
# The patterns a turn is scanned for, in the order they are tried at each place (named groups).
PATTERNS = {
    "box": rf"\[\s*{NUMBER}(?:{_COMMA}{NUMBER}){{3}}\s*\]",
    "span": rf"\{{\s*{NUMBER}{_COMMA}{NUMBER}\s*\}}",
    "time": rf"\{{\s*{NUMBER}\s*\}}",
    # A box or span already in placeholders (form a), commas between them allowed (LLaVA-ST's demo writes them).
    "placeholder_box": rf"\[\s*{ONE_PLACEHOLDER}(?:\s*,?\s*{ONE_PLACEHOLDER}){{3}}\s*\]",
    "placeholder_span": r"\{\s*<TEMP-(?:INPUT|OUTPUT)>\s*,?\s*<TEMP-(?:INPUT|OUTPUT)>\s*\}",
    "placeholder": ONE_PLACEHOLDER,
}
NUMERIC = ("box", "span", "time")
COORDINATE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in PATTERNS.items()))
NUMBER_RE = re.compile(NUMBER)
PLACEHOLDER_RE = re.compile(ONE_PLACEHOLDER)
BOX_AXES = ("WIDTH", "HEIGHT", "WIDTH", "HEIGHT")


# --------------------------------------------------------------------------------- reading a sample
def ground_turns(
    turns: list[dict], variables, numbers: bool = True
) -> tuple[list[dict], dict[str, list[float]]] | None:
    """`turns` (`{"from": "user" | "assistant" | "system", "value"}`) with their numeric coordinates
    written as placeholders, and the sample's `variables` (all six lists) in text order; None where the
    sample has no coordinate at all. Raises ValueError with the one-line reason a sample is refused.
    `numbers`: whether boxes, spans and time points written as numbers are coordinates (form b); without,
    only placeholders are (form a), and numbers stay text."""
    given = _given_values(variables)
    _check_counts(turns, given)
    pending = {key: iter(values) for key, values in given.items()}
    found = empty_variables()
    grounded = []
    for number, turn in enumerate(turns, 1):
        where = f"turn {number} ({SPEAKERS.get(turn['from'], turn['from'])})"
        direction = "OUTPUT" if turn["from"] == "assistant" else "INPUT"
        pieces, cursor = [], 0
        for match in COORDINATE.finditer(turn["value"]):
            if not numbers and match.lastgroup in NUMERIC:
                continue
            written, placeholders, values = _read(match, direction, pending)
            _check_group(_kind(match, placeholders), match, placeholders, values, where)
            for placeholder, value in zip(placeholders, values):
                found[KEY_OF[placeholder]].append(value)
            pieces += [turn["value"][cursor : match.start()], written]
            cursor = match.end()
        grounded.append({**turn, "value": "".join(pieces) + turn["value"][cursor:]})
    if not any(found.values()):
        return None
    return grounded, found


def _given_values(variables) -> dict[str, list[float]]:
    """The `variables` a sample gives, checked: a dict of LLaVA-ST's keys, each a list of finite numbers."""
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise ValueError("'variables' must be an object of LLaVA-ST's six lists")
    unknown = sorted(set(variables) - set(VARIABLE_KEYS))
    if unknown:
        raise ValueError(f"'variables' has unknown key(s) {unknown}; LLaVA-ST's are {list(VARIABLE_KEYS)}")
    given = {}
    for key, values in variables.items():
        values = [] if values is None else values
        if not isinstance(values, list):
            raise ValueError(f"variables[{key!r}] must be a list of numbers")
        for index, value in enumerate(values):
            # bool is an int to Python, and json.loads reads NaN and Infinity: neither is a coordinate.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"variables[{key!r}][{index}] is {value!r}, not a number")
        given[key] = [float(v) for v in values]
    return given


def _check_counts(turns: list[dict], given: dict[str, list[float]]) -> None:
    """Each placeholder already in the text has exactly one value in `variables`, and the other way round."""
    for placeholder, key in KEY_OF.items():
        in_text = sum(turn["value"].count(placeholder) for turn in turns)
        values = len(given.get(key, []))
        if values > in_text:
            raise ValueError(
                f"variables[{key!r}] has {values} value(s) for {in_text} {placeholder} in the text: "
                f"{values - in_text} name(s) no placeholder"
            )
        if values < in_text:
            raise ValueError(
                f"the text has {in_text} {placeholder} but variables[{key!r}] has {values} value(s): "
                f"{in_text - values} placeholder(s) without a value"
            )


def _read(match: re.Match, direction: str, pending: dict) -> tuple[str, list[str], list[float]]:
    """`(text written in place of the match, its placeholders, their values)`. Numbers become placeholders
    of `direction`; placeholders already there keep their text and take their values from `pending`."""
    kind = match.lastgroup
    if kind.startswith("placeholder"):
        placeholders = PLACEHOLDER_RE.findall(match.group())
        return match.group(), placeholders, [next(pending[KEY_OF[p]]) for p in placeholders]
    values = [float(n) for n in NUMBER_RE.findall(match.group())]
    mark = input_placeholder if direction == "INPUT" else output_placeholder
    if kind == "box":
        placeholders = [mark(axis) for axis in BOX_AXES]
        return f"[{''.join(placeholders)}]", placeholders, values
    placeholders = [mark("TEMP")] * len(values)
    written = "".join(placeholders)
    return (f"{{{written}}}" if kind == "span" else written), placeholders, values


def _kind(match: re.Match, placeholders: list[str]) -> str:
    """box, span, time or values (placeholders that form no box: checked one by one)."""
    kind = match.lastgroup
    if kind == "placeholder_box":
        axes = tuple(p[1:].split("-")[0] for p in placeholders)
        return "box" if axes == BOX_AXES else "values"
    if kind == "placeholder_span":
        return "span"
    return "values" if kind == "placeholder" else kind


def _check_group(kind: str, match: re.Match, placeholders: list[str], values: list[float], where: str) -> None:
    shown = match.group() if not match.lastgroup.startswith("placeholder") else _written(kind, values)
    outside = any(not 0.0 <= v <= 1.0 for v in values)
    if kind == "box":
        if outside:
            raise ValueError(
                f"{where}: box {shown} has a value outside [0, 1] (x1, y1, x2, y2 are fractions of the width and height)"
            )
        x1, y1, x2, y2 = values
        if x2 < x1 or y2 < y1:
            raise ValueError(f"{where}: box {shown} has {'x2 < x1' if x2 < x1 else 'y2 < y1'}")
    elif kind in ("span", "time"):
        if outside:
            raise ValueError(
                f"{where}: {kind} {shown} is outside the clip (times are fractions of its duration, in [0, 1])"
            )
        if kind == "span" and values[1] < values[0]:
            raise ValueError(f"{where}: span {shown} ends before it starts")
    elif outside:
        bad = next(i for i, v in enumerate(values) if not 0.0 <= v <= 1.0)
        raise ValueError(f"{where}: {placeholders[bad]} has the value {values[bad]:g}, outside [0, 1]")


def _written(kind: str, values: list[float]) -> str:
    """Values as form (b) writes them, for a message about placeholders given with `variables`."""
    numbers = ", ".join(f"{v:g}" for v in values)
    return f"[{numbers}]" if kind == "box" else f"{{{numbers}}}"


# ------------------------------------------------------------------------------- the model's tokens
def placeholder_token_ids(tokenizer) -> dict[str, int] | None:
    """placeholder -> its id, where the tokenizer holds all six placeholders as single tokens (a model's
    tokenizer after `add_coordinate_tokens`); None where it does not."""
    ids = {}
    for placeholder in PLACEHOLDERS:
        token = tokenizer.convert_tokens_to_ids(placeholder)
        if token is None or token == tokenizer.unk_token_id:
            return None
        if tokenizer(placeholder, add_special_tokens=False).input_ids != [token]:
            return None
        ids[placeholder] = token
    return ids


def require_coordinate_tokens(samples: list[dict], has_tokens: bool, data_path: str) -> None:
    """UsageError where samples have coordinates and the model has no coordinate tokens to read them."""
    grounded = [s for s in samples if "variables" in s]
    if grounded and not has_tokens:
        raise UsageError(
            f"{len(grounded)} sample(s) of --data_path have coordinates (boxes, spans or LLaVA-ST's placeholders; "
            f"the first: {grounded[0]['id']!r}) but the model has no coordinate tokens: give --coordinate_tokens "
            f"(LLaVA-ST's --stage 2) ({data_path})"
        )


# ---------------------------------------------------------------------------------- tokenized samples
def values_per_turn(turns: list[dict], variables: dict[str, list[float]]) -> list[dict[str, list[float]]]:
    """`variables` split by turn: the values of each turn's placeholders, per key, in text order."""
    pending = {key: iter(values) for key, values in variables.items()}
    split = []
    for turn in turns:
        mine = empty_variables()
        for placeholder in PLACEHOLDER_RE.findall(turn["value"]):
            key = KEY_OF[placeholder]
            mine[key].append(next(pending[key]))
        split.append(mine)
    return split


def coordinate_values(ids: list[int], turns: list[dict], variables: dict, ids_of: dict[str, int], keeps_turn) -> list:
    """`values_from_variables` for ids that a template rendered from `turns` and that truncation may have
    cut short: the values of the turns whose text the template writes (`keeps_turn(role)`: the plain
    template drops human text, placeholders included), then, per placeholder, only as many as the ids
    still hold. Truncation drops text from the end, so the placeholders left are each kind's first ones."""
    kept = empty_variables()
    for turn, values in zip(turns, values_per_turn(turns, variables)):
        if keeps_turn(turn["from"]):
            for key in kept:
                kept[key] += values[key]
    for placeholder, key in KEY_OF.items():
        kept[key] = kept[key][: sum(1 for i in ids if i == ids_of[placeholder])]
    return values_from_variables(ids, kept, ids_of)
