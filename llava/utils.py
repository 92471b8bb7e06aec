"""Small helpers that LLaVA client code imports from `llava.utils`."""

from __future__ import annotations


def disable_torch_init() -> None:
    """LLaVA's model-loading speed-up: new `nn.Linear` and `nn.LayerNorm` modules skip their default
    random initialisation in this process (their weights are expected to be loaded right after).

    It changes torch for the whole process, as LLaVA's does: call it only before loading trained
    weights, never before building a model that is meant to train from fresh initial weights.
    """
    import torch

    torch.nn.Linear.reset_parameters = lambda self: None
    torch.nn.LayerNorm.reset_parameters = lambda self: None
