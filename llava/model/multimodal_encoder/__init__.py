from .builder import VisionTower, build_vision_tower

__all__ = ["VisionTower", "build_vision_tower"]
