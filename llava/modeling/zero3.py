"""DeepSpeed ZeRO-3 as the model meets it: parameters that may be partitioned across ranks.

DeepSpeed is imported only where ZeRO-3 is active (a run that configured it, or parameters it partitioned),
so that the model loads and runs where DeepSpeed is not installed (an exported checkpoint's custom code).
"""

from __future__ import annotations

import contextlib

import torch


def zero3_init():
    """Under ZeRO-3 the language model and the tower come partitioned (and in the run's dtype) from
    from_pretrained; modules built after them must be created the same way, or DeepSpeed meets a mix of
    partitioned and whole, bf16 and fp32 parameters."""
    from transformers.integrations import deepspeed_config, is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.Init(config_dict_or_path=deepspeed_config())


def gathered_parameters(module, modify: bool = False):
    """Whole parameters of a possibly ZeRO-3-partitioned module for the duration of the block; with
    `modify`, what rank 0 writes is what every rank keeps."""
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None)


def embedding_std(weight: torch.Tensor) -> float:
    """Per-dimension spread of the LM's input embeddings (gathered first where ZeRO-3 partitioned them)."""
    holder = torch.nn.Module()
    holder.weight = weight
    with gathered_parameters(holder):
        return float(weight.detach().float().std())
