"""How many positions a language model has, and how many new tokens a generation request still gets."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def max_positions(config) -> int | None:
    """The number of positions the language model can attend over (GPT-2 n_positions, MPT max_seq_len)."""
    for name in ("n_positions", "max_position_embeddings", "max_seq_len"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def fit_new_tokens(model, prompt_length: int, kwargs: dict) -> None:
    """Clients ask for LLaVA's budgets (lmms-eval: 1024 new tokens, run_llava: 512) whatever the model's
    positions: a small LM (GPT-2: 1024 positions, 96 of them a clip's) gets what still fits. Changes
    `kwargs` (generate's) in place; logs once per model."""
    limit = max_positions(model.config)
    if limit is None:
        return
    room = limit - prompt_length
    if room <= 0:
        raise ValueError(
            f"the prompt with its visual tokens takes {prompt_length} positions; the language model has {limit}"
        )
    requested = kwargs.get("max_new_tokens")
    if requested is not None and requested > room:
        if not getattr(model, "_logged_new_token_limit", False):
            logger.warning(
                "max_new_tokens=%d does not fit the language model's %d positions after a %d-token prompt; "
                "generating at most %d (logged once)",
                requested,
                limit,
                prompt_length,
                room,
            )
            model._logged_new_token_limit = True
        kwargs["max_new_tokens"] = room
        if kwargs.get("min_new_tokens") is not None:
            kwargs["min_new_tokens"] = min(kwargs["min_new_tokens"], room)
