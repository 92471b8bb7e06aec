import pytest
import torch

import llava.model  # noqa: F401  (registers the families)
from llava.testing import save_tiny_vision_tower


@pytest.fixture(scope="session")
def tower_dir(tmp_path_factory):
    """A tiny random DINOv2 with its image processor, saved like facebook/dinov2-large."""
    return save_tiny_vision_tower(tmp_path_factory.mktemp("dinov2"), "dinov2")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
