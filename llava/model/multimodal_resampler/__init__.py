from .builder import build_vision_resampler
from .token_packer import FastSlowTokenPacker, PackerTrack, PatchTokens, validate_grid

__all__ = ["FastSlowTokenPacker", "PackerTrack", "PatchTokens", "build_vision_resampler", "validate_grid"]
