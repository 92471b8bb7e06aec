from .builder import VisionTower, build_vision_tower, tower_architecture

__all__ = ["VisionTower", "build_vision_tower", "tower_architecture"]
