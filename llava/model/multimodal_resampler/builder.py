from .token_packer import FastSlowTokenPacker, PatchTokens

RESAMPLER_TYPES = ("fast_slow_token_packer", None)


def build_vision_resampler(settings, vision_dim: int, input_grid):
    """The resampler that `settings.mm_resampler_type` names (a VisionSettings) over an input grid
    (frames, rows, columns)."""
    kind = settings.mm_resampler_type
    if kind in (None, "", "none"):
        return PatchTokens(input_grid)
    if kind == "fast_slow_token_packer":
        return FastSlowTokenPacker(
            vision_dim, input_grid, settings.mm_fast_grid, settings.mm_slow_grid, settings.mm_packer_num_heads
        )
    raise ValueError(f"unknown mm_resampler_type {kind!r}; choose one of {RESAMPLER_TYPES}")
