"""VisionSettings: one set of defaults for training's flags, LLaVA clients' arguments and the model config."""

import json
from types import SimpleNamespace

import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.builder import causal_lm_class, load_pretrained_model
from llava.modeling.vision_settings import CONFIG_KEYS, VisionSettings
from llava.testing import tiny_vision_args

from model_helpers import clip, llava_model, upstream_checkpoint


def test_training_flags_default_to_the_settings_defaults():
    from llava.train.cache_features import CacheArguments
    from llava.train.data import DataArguments
    from llava.train.train import ModelArguments

    # num_frames is a data flag (data.py): its default must be the settings' too.
    assert VisionSettings.from_args(ModelArguments(model_name_or_path="lm"), DataArguments()) == VisionSettings()
    cache = CacheArguments()
    assert (cache.vision_tower, cache.mm_vision_select_layer) == (None, VisionSettings().mm_vision_select_layer)


def test_from_args_takes_what_an_object_has_and_defaults_the_rest():
    # LLaVA's own ModelArguments: no frame count, no packer settings, and names that mean nothing here.
    llava_args = SimpleNamespace(
        vision_tower="tower",
        mm_vision_select_layer=-1,
        mm_projector_type="linear",
        pretrain_mm_mlp_adapter=None,
        mm_use_im_start_end=False,
        mm_patch_merge_type="flat",
    )
    data_args = SimpleNamespace(num_frames=4, mm_vision_select_layer=-3)
    settings = VisionSettings.from_args(llava_args, data_args)
    assert settings == VisionSettings(
        vision_tower="tower", mm_vision_select_layer=-1, num_frames=4, mm_projector_type="linear"
    )
    assert VisionSettings.from_args(settings) == settings


def test_config_round_trip_through_config_json(tmp_path):
    from transformers import GPT2Config

    settings = VisionSettings(
        vision_tower="t",
        num_frames=4,
        mm_fast_grid=[4, 2, 2],
        mm_resampler_type=None,
        mm_projector_hidden_size=64,
        pretrain_mm_mlp_adapter="a.bin",
    )
    config = GPT2Config()
    settings.write(config)
    config.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert {k: stored[k] for k in CONFIG_KEYS.values()} == {
        "mm_vision_tower": "t",
        "mm_vision_select_layer": -2,
        "mm_num_frames": 4,
        "mm_projector_type": "mlp2x_gelu",
        "mm_projector_hidden_size": 64,
        "mm_resampler_type": None,
        "mm_fast_grid": [4, 2, 2],
        "mm_slow_grid": [2, 4, 4],
        "mm_packer_num_heads": 8,
    }
    # The adapter file is where training started from, not part of the model: it is not recorded.
    expected = settings.replace(pretrain_mm_mlp_adapter=None)
    assert VisionSettings.from_config(stored) == expected
    assert VisionSettings.from_config(GPT2Config.from_pretrained(tmp_path)) == expected
    assert VisionSettings.from_config(GPT2Config()) == VisionSettings()


def test_checkpoint_config_keeps_its_keys_and_values(tmp_path, tower_dir):
    """The mm_* keys a checkpoint's config.json held before the settings were one object, with the same values."""
    _, model = llava_model("llava_gpt2", tmp_path / "lm", tower_dir)
    model.save_pretrained(tmp_path / "ckpt")
    stored = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    mm = {
        k: v for k, v in stored.items() if k.startswith("mm_") and k not in ("mm_vision_config", "mm_image_processor")
    }
    assert mm == {
        "mm_vision_tower": str(tower_dir),
        "mm_vision_select_layer": -2,
        "mm_num_frames": 8,
        "mm_projector_type": "mlp2x_gelu",
        "mm_projector_hidden_size": 48,
        "mm_resampler_type": "fast_slow_token_packer",
        "mm_fast_grid": [8, 2, 4],
        "mm_slow_grid": [2, 4, 4],
        "mm_packer_num_heads": 4,
        "mm_hidden_size": 32,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
    }
    assert stored["mm_vision_config"]["model_type"] == "dinov2" and stored["mm_image_processor"]["crop_size"]


def test_llava_style_arguments_build_the_defaults_they_do_not_name(tmp_path, tower_dir):
    upstream_checkpoint("llava_gpt2", tmp_path)
    model = causal_lm_class("llava_gpt2").from_pretrained(tmp_path)
    llava_args = SimpleNamespace(
        vision_tower=str(tower_dir),
        mm_vision_select_layer=-1,
        mm_projector_type="linear",
        pretrain_mm_mlp_adapter=None,
        mm_use_im_start_end=False,
    )
    assert model.get_model().initialize_vision_modules(llava_args) is True
    recorded = VisionSettings.from_config(model.config)
    assert recorded == VisionSettings(
        vision_tower=str(tower_dir), mm_vision_select_layer=-1, mm_projector_type="linear"
    )
    assert model.get_model().num_visual_tokens(8) == 96 and model.get_vision_tower().select_layer == -1


def test_adapter_run_rebuilds_from_its_recorded_settings(tmp_path, assets):
    """--model-base: the visual modules come from the run's config.json, non-default settings included."""
    model = causal_lm_class("llava_gpt2").from_pretrained(assets["gpt2"])
    settings = tiny_vision_args(
        assets["tower"],
        num_frames=4,
        mm_fast_grid=(4, 2, 2),
        mm_slow_grid=(1, 8, 8),
        mm_packer_num_heads=2,
        mm_projector_type="mlp3x_gelu",
    )
    model.get_model().initialize_vision_modules(settings)
    with torch.no_grad():  # "trained" adapter weights, unlike any fresh initialization
        for p in model.get_model().mm_pos_embed.parameters():
            p.normal_()
    run = tmp_path / "run"
    model.config.save_pretrained(run)
    torch.save(model.get_model().adapter_state_dict(), run / "mm_projector.bin")

    _, loaded, _, _ = load_pretrained_model(str(run), model_base=assets["gpt2"], device="cpu")
    assert VisionSettings.from_config(loaded.config) == settings
    ids = torch.tensor([[5, IMAGE_TOKEN_INDEX, 7, 9]])
    video = clip(4)
    with torch.no_grad():
        assert torch.equal(
            loaded(input_ids=ids, images=[video]).logits, model.eval()(input_ids=ids, images=[video]).logits
        )
