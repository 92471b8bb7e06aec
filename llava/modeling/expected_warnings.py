"""transformers warnings that our own, correct use triggers, silenced exactly and only where it triggers
them, so that a user is not told that something may be wrong when nothing is.

Each context manager drops records of one message on one transformers logger while its block runs; every
other record, and the same message outside the block, is shown as usual.
"""

from __future__ import annotations

import contextlib
import logging


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _dropped(logger_name: str, prefix: str):
    logger, dropper = logging.getLogger(logger_name), _DropMessage(prefix)
    logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)


def stock_config_in_family(stock_type: str | None, llava_type: str):
    """Loading a stock checkpoint (model_type `gpt2`) into its llava family (`llava_gpt2`): transformers
    warns that a `gpt2` config instantiating a `llava_gpt2` model "can yield errors". Here it cannot: the
    family's config class is the stock class itself plus `mm_*` settings that start absent, so the stock
    config describes exactly the language model the family builds. Only that pair is silenced: a config of
    any other type (a foreign model picked by the path rule) still warns."""
    if not stock_type or stock_type == llava_type:
        return contextlib.nullcontext()
    return _dropped(
        "transformers.configuration_utils",
        f"You are using a model of type `{stock_type}` to instantiate a model of type `{llava_type}`",
    )


def unmasked_generation_steps():
    """Batch generation: we pass the prompts' attention mask, and transformers (5.x) drops a mask that is
    all ones (prompts of equal length, the usual case for captions) to save work. Once a row finishes, it
    is fed the pad token, which for GPT-2 is also EOS and BOS; the language model then sees a pad token with
    no mask and warns "We strongly recommend passing in an `attention_mask`". That row's tokens are
    discarded, so the warning is wrong here. (transformers emits it through `warning_once`, which remembers
    it as shown even when filtered: a later genuine case in the same process is not warned about again.)"""
    return _dropped("transformers.modeling_utils", "We strongly recommend passing in an `attention_mask`")
