import re

import torch
from torch import nn


def build_vision_projector(settings, vision_dim: int, out_dim: int) -> nn.Module:
    """Maps visual tokens (`vision_dim` wide) to the LM's hidden size `out_dim`, as `settings` (a
    VisionSettings) say.

    `linear`, `identity`, or `mlp{N}x_gelu` (N linear layers with GELU between them; the hidden layers
    are `mm_projector_hidden_size` wide, the LM's hidden size when unset). The seed uses `mlp2x_gelu`
    with a hidden width of 2560: 1024 -> 2560 -> 768. The linear and MLP projectors start with a
    LayerNorm over the visual features: towers differ wildly in feature scale (DINOv2's selected layers
    carry high-norm outlier tokens), and a known input scale is what lets `match_output_scale` start the
    visual tokens at the scale of the LM's own input embeddings.
    """
    kind = settings.mm_projector_type
    if kind == "identity":
        if vision_dim != out_dim:
            raise ValueError(f"identity projector needs equal widths, got {vision_dim} -> {out_dim}")
        return nn.Identity()
    if kind == "linear":
        return nn.Sequential(nn.LayerNorm(vision_dim), nn.Linear(vision_dim, out_dim))
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind or "")
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"unknown mm_projector_type {kind!r}; use linear, identity or mlpNx_gelu")
    depth = int(match.group(1))
    hidden = settings.mm_projector_hidden_size or out_dim
    widths = [vision_dim] + [hidden] * (depth - 1) + [out_dim]
    layers = [nn.LayerNorm(vision_dim)]
    for i in range(depth):
        if i:
            layers.append(nn.GELU())
        layers.append(nn.Linear(widths[i], widths[i + 1]))
    return nn.Sequential(*layers)


@torch.no_grad()
def match_output_scale(projector: nn.Module, target_std: float, vision_dim: int, samples: int = 4096) -> None:
    """Rescales a fresh projector's last layer so that its outputs have `target_std` per dimension.

    Visual tokens far larger than the LM's input embeddings drown the information the LM adds to them:
    GPT-2's learned positions, and the zero-initialized time/row/column/track tables, which then cannot
    tell the visual tokens apart (the LM sees a bag of tokens and cannot learn motion). Behind the input
    LayerNorm any features look standardized, so random normal inputs measure the output scale exactly.
    """
    last = [m for m in projector.modules() if isinstance(m, nn.Linear)]
    if not last:
        return
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(samples, vision_dim, generator=generator).to(last[-1].weight)
    std = float(projector(probe).std())
    if std > 0:
        last[-1].weight.mul_(target_std / std)
        last[-1].bias.mul_(target_std / std)
