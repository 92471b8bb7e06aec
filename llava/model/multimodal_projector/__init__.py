from .builder import build_vision_projector, match_output_scale
from .position_embedding import VisualPositionEmbedding

__all__ = ["VisualPositionEmbedding", "build_vision_projector", "match_output_scale"]
