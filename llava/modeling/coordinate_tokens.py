"""Coordinate tokens in the vocabulary and in a sample (LLaVA-ST's LAPE; the arithmetic is coordinates.py).

A model with coordinate tokens (`config.mm_coordinate_bins`, 100 as in LLaVA-ST) has, past its word
vocabulary of `config.vocab_size` ids, one id per bin and axis: `<TEMP-000>` is id `vocab_size`,
`<HEIGHT-000>` id `vocab_size + bins`, `<WIDTH-000>` id `vocab_size + 2 * bins`. The tokenizer holds the
same tokens at the same ids, so that LLaVA clients' `tokenizer.batch_decode` writes them out. The six
placeholders (`<TEMP-INPUT>`, `<TEMP-OUTPUT>`, ... ) are word ids (the last six of the vocabulary).

A sample gives its placeholders' values in LLaVA-ST's `variables` dict: six lists, one per placeholder,
read in the order the placeholder appears in the sample's text. In a batch they travel as
`coordinate_values`, a float tensor shaped like `input_ids` holding each placeholder's value and NaN
elsewhere (`values_from_variables`), which survives padding and truncation as the ids do.
"""

from __future__ import annotations

import math

import torch

from .coordinates import AXES, BINS, bin_token, bin_tokens, input_placeholder, output_placeholder

# placeholder -> (axis, LLaVA-ST's `variables` key), in LLaVA-ST's order.
PLACEHOLDERS = {
    input_placeholder("TEMP"): ("TEMP", "temporal_input_locations"),
    output_placeholder("TEMP"): ("TEMP", "temporal_output_locations"),
    input_placeholder("HEIGHT"): ("HEIGHT", "spatial_height_input_locations"),
    output_placeholder("HEIGHT"): ("HEIGHT", "spatial_height_output_locations"),
    input_placeholder("WIDTH"): ("WIDTH", "spatial_width_input_locations"),
    output_placeholder("WIDTH"): ("WIDTH", "spatial_width_output_locations"),
}
VARIABLE_KEYS = tuple(key for _, key in PLACEHOLDERS.values())
OUTPUT_PLACEHOLDERS = tuple(p for p in PLACEHOLDERS if p.endswith("-OUTPUT>"))


def empty_variables() -> dict[str, list[float]]:
    return {key: [] for key in VARIABLE_KEYS}


def coordinate_bins(config) -> int:
    """Bins per axis of a model's coordinate tokens; 0 for a model without them (every older checkpoint)."""
    return int(getattr(config, "mm_coordinate_bins", 0) or 0)


def placeholder_ids(config) -> dict[str, int]:
    """placeholder -> its word id, for a model with coordinate tokens ({} without)."""
    return dict(getattr(config, "mm_coordinate_placeholder_ids", None) or {})


def add_coordinate_tokens(model, tokenizer, bins: int = BINS) -> bool:
    """Gives `model` (a llava model) and `tokenizer` coordinate tokens; returns False where they have them.

    The placeholders join the word vocabulary (the embeddings are resized to the tokenizer's length, so
    a family whose table was padded past its tokenizer, Qwen2's, loses the unused rows), then the bin
    tokens are added to the tokenizer only: their ids are `vocab_size + k`, served by the model's own
    coordinate tables (see coordinate_embedding.py), not by the word embeddings."""
    config = model.config
    if coordinate_bins(config):
        if tokenizer.convert_tokens_to_ids(bin_token("TEMP", 0)) != config.vocab_size:
            raise ValueError("the tokenizer does not hold this model's coordinate tokens at their ids")
        return False
    tokenizer.add_tokens(list(PLACEHOLDERS), special_tokens=True)
    model.resize_token_embeddings(len(tokenizer))
    vocab_size = model.get_input_embeddings().weight.shape[0]
    tokenizer.add_tokens([t for axis in AXES for t in bin_tokens(axis, bins)], special_tokens=True)
    if tokenizer.convert_tokens_to_ids(bin_token("TEMP", 0)) != vocab_size:
        raise ValueError("the tokenizer's coordinate tokens did not land right after the word vocabulary")
    config.mm_coordinate_bins = bins
    config.mm_coordinate_placeholder_ids = {p: tokenizer.convert_tokens_to_ids(p) for p in PLACEHOLDERS}
    model.get_model().build_coordinate_embedding()
    return True


def values_from_variables(ids, variables: dict | None, ids_of: dict[str, int]) -> list[float]:
    """Each position of `ids` (ints) -> its placeholder's value from `variables`, NaN where there is no
    placeholder. Raises ValueError naming the placeholder where the counts differ: more values than
    placeholders (a variable that names no placeholder) or fewer (a placeholder without its value)."""
    variables = variables or {}
    unknown = sorted(set(variables) - set(VARIABLE_KEYS))
    if unknown:
        raise ValueError(f"variables has unknown keys {unknown}; LLaVA-ST's are {list(VARIABLE_KEYS)}")
    values = [math.nan] * len(ids)
    for placeholder, (_, key) in PLACEHOLDERS.items():
        given = list(variables.get(key) or [])
        token = ids_of.get(placeholder)
        where = [i for i, t in enumerate(ids) if t == token] if token is not None else []
        if len(where) != len(given):
            raise ValueError(f"{len(given)} value(s) in variables[{key!r}] for {len(where)} {placeholder} in the text")
        for i, value in zip(where, given):
            values[i] = float(value)
    return values


def batch_values(input_ids, coordinate_values, variables, config):
    """A batch's `coordinate_values`, from LLaVA-ST's `variables` (one dict per row) where those are given."""
    if variables is None or input_ids is None:
        return coordinate_values
    ids_of = placeholder_ids(config)
    rows = [values_from_variables(row.tolist(), v, ids_of) for row, v in zip(input_ids, variables)]
    return torch.tensor(rows, dtype=torch.float32, device=input_ids.device)
