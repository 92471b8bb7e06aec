"""Language-aligned coordinates (LLaVA-ST's LAPE, arXiv 2501.08282): a position in time, height or width
of a clip, a value in [0, 1], as the language model reads and writes it.

Each axis has BINS bins, bin k standing for k / (BINS - 1). The model reads a value through a placeholder
token (`<TEMP-INPUT>`, `<HEIGHT-INPUT>`, `<WIDTH-INPUT>`) whose embedding is the interpolation of the two
nearest bins' input embeddings (`interpolate`); it writes one through a bin token (`<TEMP-042>`: an id
past the word vocabulary, scored by an output head per axis), trained against a two-hot target, the
value's weight shared by its two nearest bins (`two_hot`), and read back as its bin's
value (`decode`, within half a bin of what was meant). `reparam` lets neighbouring bins learn together:
on top of its own gradient, each bin's row receives every row's, weighted 2^-distance (its own included),
while the forward value stays the row itself.
"""

from __future__ import annotations

import torch

BINS = 100
AXES = ("TEMP", "HEIGHT", "WIDTH")


def input_placeholder(axis: str) -> str:
    return f"<{axis}-INPUT>"


def output_placeholder(axis: str) -> str:
    return f"<{axis}-OUTPUT>"


def bin_token(axis: str, index: int) -> str:
    return f"<{axis}-{index:03d}>"


def bin_tokens(axis: str, bins: int = BINS) -> list[str]:
    return [bin_token(axis, k) for k in range(bins)]


def neighbours(values: torch.Tensor, bins: int = BINS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower bin, upper bin, the upper one's weight) of each value, clipped to [0, 1]."""
    scaled = values.clamp(0.0, 1.0) * (bins - 1)
    lower = scaled.floor().long()
    upper = scaled.ceil().long()
    return lower, upper, scaled - lower


def interpolate(values: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(n,) values -> (n, hidden): each the mix of its two nearest rows of `table` (bins x hidden)."""
    lower, upper, weight = neighbours(values, table.shape[0])
    weight = weight.to(table.dtype).unsqueeze(-1)
    return table[lower] * (1 - weight) + table[upper] * weight


def two_hot(values: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """(n,) values -> (n, bins) targets: 1 - w on the lower bin and w on the upper (1 on an exact bin)."""
    lower, upper, weight = neighbours(values, bins)
    target = torch.zeros(values.shape[0], bins, dtype=torch.float32, device=values.device)
    target.scatter_add_(1, lower.unsqueeze(1), (1 - weight).float().unsqueeze(1))
    target.scatter_add_(1, upper.unsqueeze(1), weight.float().unsqueeze(1))
    return target


def decode(logits_or_bins: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Bin indices (n,), or logits (n, bins) read at their highest bin -> values in [0, 1]."""
    index = logits_or_bins.argmax(-1) if logits_or_bins.is_floating_point() else logits_or_bins
    return index.float() / (bins - 1)


def smoothing_matrix(bins: int = BINS) -> torch.Tensor:
    """2^-|i - j|: how much of bin j's gradient bin i receives."""
    index = torch.arange(bins, dtype=torch.float32)
    return 2.0 ** (-(index[:, None] - index[None, :]).abs())


def reparam(weight: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """`weight` in the forward pass; in the backward pass each row also gets its neighbours' gradients,
    weighted by `matrix` (the smoothed term is added and subtracted, its subtraction detached)."""
    smoothed = matrix.to(weight.dtype).to(weight.device) @ weight
    return weight + smoothed - smoothed.detach()
