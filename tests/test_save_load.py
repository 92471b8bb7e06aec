"""Checkpoints: a saved llava model rebuilds itself from its config alone; stock checkpoints load in."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

from llava.model import LlavaGPT2ForCausalLM
from llava.modeling.adapter_weights import adapter_state_dict, load_adapter_weights
from llava.testing import save_tiny_vision_tower, tiny_vision_args

from model_helpers import FAMILIES, clip, llava_model, prompt, right_padded


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_rebuilds_everything_from_config(family, tmp_path):
    tower = save_tiny_vision_tower(tmp_path / "tower")
    _, model = llava_model(family, tmp_path / "lm", tower)
    with torch.no_grad():  # make the zero-initialized tables non-trivial so their reload is tested
        for p in model.get_model().mm_pos_embed.parameters():
            p.normal_()
    model.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(tower)  # the checkpoint must not need the tower's folder any more

    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == family
    assert config["mm_fast_grid"] == [8, 2, 4] and config["mm_slow_grid"] == [2, 4, 4]
    assert config["mm_vision_config"]["model_type"] == "dinov2"

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    assert type(loaded) is type(model)
    ids, mask = right_padded([prompt(5, None, 7, 8), prompt(9, 10)])
    video = clip()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask, images=[video]).logits
        after = loaded(input_ids=ids, attention_mask=mask, images=[video]).logits
    assert torch.equal(before, after)
    assert loaded.get_vision_tower().image_processor.to_dict() == model.get_vision_tower().image_processor.to_dict()


def test_plain_gpt2_checkpoint_keeps_every_weight_and_tied_head(tmp_path, tower_dir):
    torch.manual_seed(1)
    from llava.testing import TINY_LANGUAGE_CONFIGS

    plain = GPT2LMHeadModel(TINY_LANGUAGE_CONFIGS["llava_gpt2"]())
    plain.save_pretrained(tmp_path / "gpt2")
    model = LlavaGPT2ForCausalLM.from_pretrained(tmp_path / "gpt2")
    theirs, ours = plain.state_dict(), model.state_dict()
    assert set(theirs) == set(ours)
    for key, value in theirs.items():
        assert torch.equal(value, ours[key]), key
    assert model.lm_head.weight is model.transformer.wte.weight

    model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
    model.save_pretrained(tmp_path / "llava")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "llava")
    assert reloaded.lm_head.weight is reloaded.transformer.wte.weight
    assert torch.equal(reloaded.transformer.wte.weight, plain.transformer.wte.weight)


@pytest.mark.parametrize("prefix", ["", "model."])
def test_adapter_file_loads_back(tmp_path, tower_dir, prefix):
    _, trained = llava_model("llava_gpt2", tmp_path / "a", tower_dir)
    with torch.no_grad():
        for p in trained.get_model().mm_pos_embed.parameters():
            p.normal_()
    weights = {prefix + k: v for k, v in adapter_state_dict(trained.get_model()).items()}
    torch.save(weights, tmp_path / "mm_projector.bin")

    _, fresh = llava_model(
        "llava_gpt2", tmp_path / "b", tower_dir, pretrain_mm_mlp_adapter=str(tmp_path / "mm_projector.bin")
    )
    got = adapter_state_dict(fresh.get_model())
    assert set(got) == set(adapter_state_dict(trained.get_model()))
    for key, value in adapter_state_dict(trained.get_model()).items():
        assert torch.equal(got[key], value), key


def test_adapter_that_does_not_fit_is_refused(tmp_path, tower_dir):
    _, model = llava_model("llava_gpt2", tmp_path / "a", tower_dir)
    weights = adapter_state_dict(model.get_model())
    weights["mm_projector.0.weight"] = torch.zeros(3, 3)
    torch.save(weights, tmp_path / "bad.bin")
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_adapter_weights(model.get_model(), str(tmp_path / "bad.bin"))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tower_reads_back_from_a_checkpoints_files_alone(family, tmp_path, tower_dir):
    """cache_features reads a checkpoint's tower from its safetensors keys without the language model;
    transformers stores Mixtral's `.mlp.` keys (the tower's too) under their original name, which the
    reader undoes."""
    from llava.modeling.vision_tower import load_vision_tower_from_checkpoint

    _, model = llava_model(family, tmp_path / "lm", tower_dir)
    model.save_pretrained(tmp_path / "ckpt")
    tower = load_vision_tower_from_checkpoint(str(tmp_path / "ckpt"), model.config)
    expected = model.get_vision_tower().state_dict()
    assert sorted(tower.state_dict()) == sorted(expected)
    assert all(torch.equal(tower.state_dict()[k], v) for k, v in expected.items())
