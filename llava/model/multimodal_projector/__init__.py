from .builder import build_vision_projector
from .position_embedding import VisualPositionEmbedding

__all__ = ["VisualPositionEmbedding", "build_vision_projector"]
