"""LLaVA's and LLaVA-NeXT's published training command lines, run through llava/train/train_mem.py as
their scripts start it (torchrun, the deepspeed launcher), with only paths and sizes changed; LLaVA-1.5's
two stages; the switches those scripts use, checked on the models they build."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN, IMAGE_TOKEN_INDEX
from llava.model import LlavaGPT2ForCausalLM
from llava.modeling.adapter_weights import adapter_state_dict
from llava.train import train
from llava.train.sampler import ModalityLengthGroupedSampler

from llava_script_helpers import (
    TINY_SIZES,
    TORCHRUN,
    llava15_finetune_args,
    llava15_pretrain_args,
    make_llava_assets,
    ov_to_video_args,
    pretrain_siglip_args,
    run_train_mem,
    without,
)
from train_helpers import ROOT, free_port


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_llava_assets(tmp_path_factory.mktemp("llava_assets"))


@pytest.fixture(scope="module")
def mixture(assets, tmp_path_factory):
    """A LLaVA-NeXT YAML mixture of the images, the clips and the text-only samples."""
    path = tmp_path_factory.mktemp("mixture") / "video_mix.yaml"
    path.write_text(f"""datasets:
  - json_path: {assets["images"]}
    sampling_strategy: "first:50%"
  - json_path: {assets["train"]}
    sampling_strategy: "end:6"
  - json_path: {assets["text"]}
    sampling_strategy: "random:4"
""")
    return path


def warnings_in(stderr: str) -> list[str]:
    return [line.split(" llava.train: ", 1)[1] for line in stderr.splitlines() if " WARNING llava.train: " in line]


def assert_ran(result):
    assert result.returncode == 0, result.stderr[-4000:]


# ------------------------------------------------------------------------ LLaVA-NeXT's scripts
@pytest.mark.slow
def test_pretrain_siglip_command_line_trains_through_train_mem(assets, tmp_path):
    out = tmp_path / "projector"
    result = run_train_mem(pretrain_siglip_args(assets, out), launcher=[*TORCHRUN, "--nproc_per_node", "1"])
    assert_ran(result)
    warned = " | ".join(warnings_in(result.stderr))
    for flag in ("--tf32 True is dropped", "--report_to wandb is dropped", "--model_max_length 8192 is more than"):
        assert flag in warned, warned
    # --mm_tunable_parts mm_mlp_adapter on an untrained packer: the packer trains with the projector
    assert "mm_vision_resampler trains too" in result.stderr
    adapter = torch.load(out / "mm_projector.bin", weights_only=True)
    assert any(k.startswith("vision_resampler.") for k in adapter) and any(
        k.startswith("mm_projector.") for k in adapter
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.conv_template == "plain" and model.config.image_aspect_ratio == "square"


@pytest.mark.slow
def test_video_script_command_line_with_a_yaml_mixture(assets, mixture, tmp_path):
    # SO400M_Qwen2_7B_ov_to_video_am9.sh, started as it starts (deepspeed llava/train/train_mem.py); its
    # anyres flags are the one change besides paths and sizes: refused here, replaced as the refusal says.
    out = tmp_path / "video"
    args = ov_to_video_args(assets, out, mixture, image_flags=["--image_aspect_ratio", "pad"])
    deepspeed = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    result = run_train_mem(args, launcher=[deepspeed, "--master_port", str(free_port())])
    assert_ran(result)
    warned = " | ".join(warnings_in(result.stderr))
    assert "--torch_compile is dropped under DeepSpeed ZeRO-3" in warned
    assert "--mm_spatial_pool_stride 2 has no effect" in warned and "--mm_newline_position" not in warned
    assert "loaded 16 samples from" in result.stderr and "6 video, 6 image, 4 text-only" in result.stderr
    config = AutoModelForCausalLM.from_pretrained(out).config
    assert config.mm_num_frames == 8  # --frames_upbound
    assert (config.conv_template, config.image_aspect_ratio) == ("qwen_1_5", "pad")


@pytest.mark.slow
def test_anyres_flags_of_finetune_ov_are_refused_in_one_line(assets, mixture, tmp_path):
    result = run_train_mem(ov_to_video_args(assets, tmp_path / "ov", mixture))  # finetune_ov.sh's image flags
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "--image_aspect_ratio 'anyres_max_9' is not supported" in lines[0] and "use 'pad'" in lines[0]
    assert not (tmp_path / "ov").exists()


# -------------------------------------------------------------------------- LLaVA-1.5's stages
@pytest.mark.slow
def test_llava15_two_stages_carry_the_trained_adapter_into_stage_two(assets, tmp_path):
    stage1 = tmp_path / "llava-v1.5-pretrain"
    result = run_train_mem(llava15_pretrain_args(assets, stage1), launcher=[*TORCHRUN, "--nproc_per_node", "1"])
    assert_ran(result)
    adapter = torch.load(stage1 / "mm_projector.bin", weights_only=True)

    # --tune_mm_mlp_adapter trained the packer and the projector (and the embeddings) from their start
    set_seed(0)
    start = train.build_model(train.parse_args(without(llava15_pretrain_args(assets, tmp_path / "x"), "--deepspeed")))
    initial = adapter_state_dict(start.model.get_model())
    assert set(adapter) == set(initial)
    for prefix in ("vision_resampler.", "mm_projector.", "mm_pos_embed."):
        changed = [k for k in adapter if k.startswith(prefix) and not torch.equal(adapter[k], initial[k])]
        assert changed, f"nothing of {prefix} trained"
    lm = AutoModelForCausalLM.from_pretrained(assets["gpt2"]).transformer.h[0].attn.c_attn.weight
    saved = AutoModelForCausalLM.from_pretrained(stage1).transformer.h[0].attn.c_attn.weight
    assert torch.equal(saved.float(), lm.to(saved.dtype).float())  # the language model stayed frozen (saved in bf16)

    # stage 2 starts from exactly that adapter
    stage2_args = llava15_finetune_args(assets, tmp_path / "llava-v1.5", stage1 / "mm_projector.bin")
    model = train.build_model(train.parse_args(without(stage2_args, "--deepspeed"))).model
    for key, value in adapter_state_dict(model.get_model()).items():
        assert torch.equal(value, adapter[key]), key

    result = run_train_mem(stage2_args, launcher=[*TORCHRUN, "--nproc_per_node", "1"])
    assert_ran(result)
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "llava-v1.5")
    assert (final.config.conv_template, final.config.image_aspect_ratio) == ("v1", "pad")
    assert not final.config.mm_use_im_start_end and not final.config.mm_use_im_patch_token


# ------------------------------------------------------------------ the switches, on their models
@pytest.mark.slow
def test_im_start_end_and_patch_tokens_round_trip(assets, tmp_path):
    out = tmp_path / "start_end"
    args = llava15_finetune_args(assets, out, "unused", steps=2)
    args = without(
        args, "--deepspeed", "--pretrain_mm_mlp_adapter", "--mm_use_im_start_end", "--mm_use_im_patch_token", "--bf16"
    )
    trainer = train.main([*args, "--mm_use_im_start_end", "True", "--mm_use_im_patch_token", "True"])
    tokenizer = trainer.processing_class
    new = [DEFAULT_IMAGE_PATCH_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
    ids = tokenizer.convert_tokens_to_ids(new)
    assert ids == list(range(len(tokenizer) - 3, len(tokenizer)))  # added as new special tokens
    assert tokenizer.convert_ids_to_tokens(ids) == new and all(tokenizer.added_tokens_decoder[i].special for i in ids)
    assert trainer.model.get_input_embeddings().num_embeddings >= len(tokenizer)  # resized where needed

    item = trainer.train_dataset[0]["input_ids"].tolist()
    at = item.index(IMAGE_TOKEN_INDEX)
    assert item[at - 1 : at + 2] == [ids[1], IMAGE_TOKEN_INDEX, ids[2]]  # <im_start><image><im_end>

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.mm_use_im_start_end and reloaded.config.mm_use_im_patch_token
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(new) == ids
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    batch.pop("skipped")
    with torch.no_grad():
        assert torch.equal(trainer.model.eval()(**batch).logits, reloaded.eval()(**batch).logits)

    # continuing from the checkpoint without the flags keeps them (the model was trained with them)
    args = [
        *without(args, "--model_name_or_path", "--vision_tower", "--output_dir"),
        "--model_name_or_path",
        str(out),
        "--output_dir",
        str(tmp_path / "again"),
    ]
    parsed = train.parse_args(args)
    built = train.build_model(parsed)
    assert not parsed.prompt.mm_use_im_start_end  # not given: the checkpoint's own stays on
    assert built.model.config.mm_use_im_start_end and built.prompt.mm_use_im_start_end


@pytest.mark.slow
def test_vision_tower_lr_is_its_own_optimizer_group_and_frames_upbound_meets_the_model(assets, tmp_path, capsys):
    args = without(
        llava15_finetune_args(assets, tmp_path / "out", "unused", steps=1), "--deepspeed", "--pretrain_mm_mlp_adapter"
    )
    trainer, _ = train.build_trainer(
        [
            *args,
            "--mm_tunable_parts",
            "mm_vision_tower,mm_mlp_adapter,mm_language_model",
            "--mm_vision_tower_lr",
            "2e-6",
            "--mm_projector_lr",
            "1e-4",
        ]
    )
    optimizer = trainer.create_optimizer()
    tower = {id(p) for p in trainer.model.get_vision_tower().parameters()}
    adapter = {
        id(p)
        for m in ("vision_resampler", "mm_projector", "mm_pos_embed")
        for p in getattr(trainer.model.get_model(), m).parameters()
    }
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        expected = 2e-6 if ids <= tower else 1e-4 if ids <= adapter else 2e-5
        assert group["lr"] == expected and (ids <= tower or not ids & tower)
    assert tower <= {id(p) for g in optimizer.param_groups for p in g["params"]}

    # a model built for 8 frames reads clips at 8 when --frames_upbound asks for 16, and counts 8's tokens
    first = tmp_path / "first"
    train.main(without(llava15_pretrain_args(assets, first, steps=1), "--deepspeed"))
    video = without(args, "--model_name_or_path", "--vision_tower", "--data_path")
    parsed = train.parse_args(
        [
            *video,
            "--model_name_or_path",
            str(first),
            "--data_path",
            assets["train"],
            "--video_folder",
            assets["video_folder"],
            "--frames_upbound",
            "16",
        ]
    )
    built, _, dataset, _, _ = train.model_and_data(parsed)
    assert parsed.vision.num_frames == 16 and built.num_frames == 8
    assert "clips are read at 8 frames, not 16" in capsys.readouterr().err
    assert dataset[0]["pixel_values"].shape[0] == 8
    assert dataset.visual_tokens("video") == built.model.get_model().num_visual_tokens(8)


def test_model_class_name_and_flash_attention_fall_back_or_refuse(assets, tmp_path, capsys):
    args = without(
        llava15_finetune_args(assets, tmp_path / "out", "unused", steps=1), "--deepspeed", "--pretrain_mm_mlp_adapter"
    )
    model = train.build_model(
        train.parse_args(
            [*args, "--model_class_name", "LlavaGPT2ForCausalLM", "--attn_implementation", "flash_attention_2"]
        )
    ).model
    assert isinstance(model, LlavaGPT2ForCausalLM) and model.config._attn_implementation == "sdpa"
    assert "flash_attention_2 needs the flash-attn package" in capsys.readouterr().err
    with pytest.raises(train.FlagError, match="--model_class_name LlavaQwenForCausalLM does not fit the checkpoint"):
        train.build_model(train.parse_args([*args, "--model_class_name", "LlavaQwenForCausalLM"]))


# ------------------------------------------------------------------------ group_by_modality_length
def test_modality_grouped_order_is_single_modality_complete_and_seeded():
    has_media = [True] * 12 + [False] * 8
    lengths = list(range(20))
    sampler = ModalityLengthGroupedSampler(lengths, has_media, batch_size=2, world_size=2, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(20))
    for start in range(0, 20, 4):  # each step's mega-batch (2 ranks x 2) holds one modality
        assert len({has_media[i] for i in order[start : start + 4]}) == 1
    assert list(sampler) == order
    sampler.set_epoch(1)
    assert list(sampler) != order
    # counts that do not fill the mega-batches (10 media, 5 text): the leftovers go last, media then text
    flags = [True] * 10 + [False] * 5
    tail = list(ModalityLengthGroupedSampler(lengths[:15], flags, batch_size=2, world_size=2))
    assert sorted(tail) == list(range(15))
    assert all(len({flags[i] for i in tail[s : s + 4]}) == 1 for s in range(0, 12, 4))
    assert [flags[i] for i in tail[12:]] == [True, True, False]


RANKS_SCRIPT = """
import json, sys
from llava.train import train

out, argv = sys.argv[1], sys.argv[2:]
trainer, resume = train.build_trainer(argv)
batches = [[len(b["modalities"]), b["input_ids"].shape[0]] for b in trainer.get_train_dataloader()]
json.dump(batches, open(f"{out}.rank{trainer.args.process_index}", "w"))
train.train_and_save(trainer, resume)
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_group_by_modality_length_under_two_processes(assets, tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    out = tmp_path / "run"
    args = [
        "--deepspeed",
        str(ROOT / "scripts" / "zero2.json"),
        "--model_name_or_path",
        assets["gpt2"],
        "--vision_tower",
        assets["siglip"],
        "--version",
        "plain",
        "--data_path",
        assets["mixed"],
        "--image_folder",
        assets["image_folder"],
        "--video_folder",
        assets["video_folder"],
        "--group_by_modality_length",
        "True",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "3",
        "--output_dir",
        str(out),
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
        *TINY_SIZES,
    ]
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [*TORCHRUN, "--nproc_per_node", "2", str(script), str(tmp_path / "batches"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_ran(result)
    ranks = [json.loads(Path(f"{tmp_path / 'batches'}.rank{r}").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # 24 samples, 2 ranks x 2 per batch
    for step, (a, b) in enumerate(zip(*ranks)):
        kinds = {media == 0 or media == rows for media, rows in (a, b)}
        assert kinds == {True}, (step, a, b)  # each batch all media or all text-only
        assert (a[0] == 0) == (b[0] == 0), (step, a, b)  # and the two ranks' batches of a step alike
    assert sum(a[0] for a, _ in zip(*ranks)) + sum(b[0] for _, b in zip(*ranks)) == 16  # 8 images + 8 clips
    assert (out / "model.safetensors").exists()


def test_letterboxed_images_are_encoded_online_not_read_from_the_feature_cache(assets, tmp_path, capsys):
    from llava.train import cache_features

    base = [
        *without(llava15_pretrain_args(assets, tmp_path / "unused", steps=1), "--deepspeed"),
        "--feature_cache",
        str(tmp_path / "cache"),
    ]
    assert cache_features.main(base)["computed"] == 12  # images as the tower sees them, square

    def dataset(*extra):
        return train.model_and_data(train.parse_args([*base, *extra]))[2]

    assert len(dataset().cache_keys) == 12
    padded = dataset("--image_aspect_ratio", "pad")
    assert padded.cache_keys == {} and padded[0]["pixel_values"] is not None
    assert "--image_aspect_ratio pad: images are encoded online" in capsys.readouterr().err
