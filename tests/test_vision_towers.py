"""Vision towers: the selected layer's patch tokens, CLS and registers dropped, frozen, from a folder."""

import pytest
import torch
from transformers import (
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

from llava.modeling.vision_tower import VisionTower
from llava.testing import IMAGE_SIZE, TINY_TOWERS, save_dinov2, save_tiny_vision_tower

from model_helpers import clip, llava_model, prompt


@pytest.mark.parametrize("kind, prefix", [("dinov2", 1), ("clip", 1), ("siglip", 0)])
def test_tower_returns_selected_layer_patch_grid(kind, prefix, tmp_path):
    folder = save_tiny_vision_tower(tmp_path, kind)
    tower = VisionTower.from_pretrained(folder, select_layer=-2)
    pixels = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        grid = tower(pixels)
        hidden = tower.vision_tower(pixels, output_hidden_states=True).hidden_states[-2]
    assert grid.shape == (3, 8, 8, 32)
    assert hidden.shape[1] == 64 + prefix
    assert torch.equal(grid.reshape(3, 64, 32), hidden[:, prefix:])


def test_registers_are_dropped(tmp_path):
    torch.manual_seed(0)
    Dinov2WithRegistersModel(
        Dinov2WithRegistersConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=7,
            num_register_tokens=4,
        )
    ).save_pretrained(tmp_path)
    TINY_TOWERS["dinov2"]()[1].save_pretrained(tmp_path)
    tower = VisionTower.from_pretrained(str(tmp_path), select_layer=-1)
    assert tower.num_prefix_tokens == 5
    assert tower(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)).shape == (1, 8, 8, 32)


def test_grid_comes_from_the_processor_not_the_encoder_config(tmp_path):
    # facebook/dinov2-large says image_size=518 in its config and is fed 224-pixel crops.
    save_dinov2(
        tmp_path, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=518, patch_size=14)
    )
    tower = VisionTower.from_pretrained(str(tmp_path), select_layer=-2)
    assert tower.grid_size == 16
    assert tower(torch.randn(1, 3, 224, 224)).shape == (1, 16, 16, 32)


def test_select_layer_out_of_range_is_refused(tmp_path):
    folder = save_tiny_vision_tower(tmp_path)
    with pytest.raises(ValueError, match="mm_vision_select_layer=7"):
        VisionTower.from_pretrained(folder, select_layer=7)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_other_towers_drive_the_model(kind, tmp_path):
    folder = save_tiny_vision_tower(tmp_path / "tower", kind)
    _, model = llava_model("llava_gpt2", tmp_path / "lm", folder)
    out = model(input_ids=torch.tensor([prompt(3, None, 4)]), images=[clip()])
    assert out.logits.shape[1] == 2 + 96
    assert model.get_vision_tower().is_frozen
