import re

from torch import nn


def build_vision_projector(config, vision_dim: int) -> nn.Module:
    """Maps visual tokens to the LM's hidden size.

    `linear`, `identity`, or `mlp{N}x_gelu` (N linear layers with GELU between them; the hidden layers
    are `mm_projector_hidden_size` wide, the LM's hidden size when unset). The seed uses `mlp2x_gelu`
    with a hidden width of 2560: 1024 -> 2560 -> 768.
    """
    kind = getattr(config, "mm_projector_type", "mlp2x_gelu")
    out_dim = config.hidden_size
    if kind == "linear":
        return nn.Linear(vision_dim, out_dim)
    if kind == "identity":
        if vision_dim != out_dim:
            raise ValueError(f"identity projector needs equal widths, got {vision_dim} -> {out_dim}")
        return nn.Identity()
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind or "")
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"unknown mm_projector_type {kind!r}; use linear, identity or mlpNx_gelu")
    depth = int(match.group(1))
    hidden = getattr(config, "mm_projector_hidden_size", None) or out_dim
    widths = [vision_dim] + [hidden] * (depth - 1) + [out_dim]
    layers = []
    for i in range(depth):
        if i:
            layers.append(nn.GELU())
        layers.append(nn.Linear(widths[i], widths[i + 1]))
    return nn.Sequential(*layers)
