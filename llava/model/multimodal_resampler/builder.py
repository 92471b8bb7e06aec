from .token_packer import FastSlowTokenPacker, PatchTokens

RESAMPLER_TYPES = ("fast_slow_token_packer", None)


def build_vision_resampler(config, vision_dim: int, input_grid):
    """The resampler named by `config.mm_resampler_type` over an input grid (frames, rows, columns)."""
    kind = getattr(config, "mm_resampler_type", None)
    if kind in (None, "", "none"):
        return PatchTokens(input_grid)
    if kind == "fast_slow_token_packer":
        return FastSlowTokenPacker(
            vision_dim, input_grid, config.mm_fast_grid, config.mm_slow_grid, config.mm_packer_num_heads
        )
    raise ValueError(f"unknown mm_resampler_type {kind!r}; choose one of {RESAMPLER_TYPES}")
