"""LLaVA's and LLaVA-NeXT's published training command lines, with only paths and sizes changed, and the
tiny data they train on here (images of several aspect ratios, clips, text-only samples)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from llava.demo.synthetic import save_gpt2
from llava.testing import save_tiny_vision_tower

from train_helpers import ROOT, make_assets

TRAIN_MEM = str(ROOT / "llava" / "train" / "train_mem.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]

# Sizes every tiny run here shares (the tiny tower is 32 wide: 4 packer heads; a small projector).
TINY_SIZES = ["--mm_packer_num_heads", "4", "--mm_projector_hidden_size", "64"]


def make_llava_assets(folder) -> dict:
    """make_assets' GPT-2, DINOv2 tower and clips, plus a SigLIP tower, images and mixed data files."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    assets = make_assets(folder, num_train=12, num_val=2)
    # 1,024 positions, as the Italian GPT-2: room for LLaVA-NeXT's chat prompt and time instruction
    assets["gpt2"] = save_gpt2(folder / "bambi-gpt2-1024", folder / "tokenizer", n_positions=1024)
    assets["siglip"] = save_tiny_vision_tower(folder / "siglip", kind="siglip")
    images = folder / "images"
    images.mkdir()
    colours = {"rosso": (220, 30, 30), "verde": (30, 200, 60), "blu": (40, 60, 220)}
    image_samples = []
    for i in range(12):
        name = list(colours)[i % 3]
        size = [(96, 48), (48, 96), (64, 64)][i // 3 % 3]  # wide, tall and square images
        image = Image.new("RGB", size, (240, 240, 240))
        ImageDraw.Draw(image).ellipse([8, 8, size[0] - 8, size[1] - 8], fill=colours[name])
        image.save(images / f"img_{i:02d}.png")
        image_samples.append(
            {
                "id": f"img_{i:02d}",
                "image": f"img_{i:02d}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nDi che colore è il cerchio?"},
                    {"from": "gpt", "value": f"un cerchio {name}"},
                ],
            }
        )
    assets["image_folder"] = str(images)
    assets["images"] = _write(folder / "images.json", image_samples)
    videos = json.loads(Path(assets["train"]).read_text())
    text = [
        {
            "id": f"text_{i:02d}",
            "conversations": [
                {"from": "human", "value": "Descrivi una forma."},
                {"from": "gpt", "value": s["conversations"][1]["value"]},
            ],
        }
        for i, s in enumerate(videos)
    ]
    assets["text"] = _write(folder / "text.json", text)
    assets["mixed"] = _write(folder / "mixed.json", image_samples[:8] + videos[:8] + text[:8])
    return assets


def _write(path: Path, samples: list) -> str:
    path.write_text(json.dumps(samples, ensure_ascii=False))
    return str(path)


def llava15_pretrain_args(assets, output_dir, steps=4):
    """scripts/v1_5/pretrain.sh of LLaVA (deepspeed llava/train/train_mem.py ...), paths and sizes changed."""
    return [
        "--deepspeed",
        str(ROOT / "scripts" / "zero2.json"),
        "--model_name_or_path",
        assets["gpt2"],
        "--version",
        "plain",
        "--data_path",
        assets["images"],
        "--image_folder",
        assets["image_folder"],
        "--vision_tower",
        assets["siglip"],
        "--mm_projector_type",
        "mlp2x_gelu",
        "--tune_mm_mlp_adapter",
        "True",
        "--mm_vision_select_layer",
        "-2",
        "--mm_use_im_start_end",
        "False",
        "--mm_use_im_patch_token",
        "False",
        "--bf16",
        "True",
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--evaluation_strategy",
        "no",
        "--save_strategy",
        "steps",
        "--save_steps",
        "24000",
        "--save_total_limit",
        "1",
        "--learning_rate",
        "1e-3",
        "--weight_decay",
        "0.",
        "--warmup_ratio",
        "0.03",
        "--lr_scheduler_type",
        "cosine",
        "--logging_steps",
        "1",
        "--tf32",
        "True",
        "--model_max_length",
        "2048",
        "--gradient_checkpointing",
        "True",
        "--dataloader_num_workers",
        "0",
        "--lazy_preprocess",
        "True",
        "--report_to",
        "wandb",
        "--max_steps",
        str(steps),
        "--seed",
        "0",
        *TINY_SIZES,
    ]


def llava15_finetune_args(assets, output_dir, adapter, steps=4):
    """scripts/v1_5/finetune.sh of LLaVA, paths and sizes changed (data: images and text-only samples)."""
    return [
        "--deepspeed",
        str(ROOT / "scripts" / "zero3.json"),
        "--model_name_or_path",
        assets["gpt2"],
        "--version",
        "v1",
        "--data_path",
        f"{assets['images']},{assets['text']}",
        "--image_folder",
        assets["image_folder"],
        "--vision_tower",
        assets["siglip"],
        "--pretrain_mm_mlp_adapter",
        str(adapter),
        "--mm_projector_type",
        "mlp2x_gelu",
        "--mm_vision_select_layer",
        "-2",
        "--mm_use_im_start_end",
        "False",
        "--mm_use_im_patch_token",
        "False",
        "--image_aspect_ratio",
        "pad",
        "--group_by_modality_length",
        "True",
        "--bf16",
        "True",
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--evaluation_strategy",
        "no",
        "--save_strategy",
        "steps",
        "--save_steps",
        "50000",
        "--save_total_limit",
        "1",
        "--learning_rate",
        "2e-5",
        "--weight_decay",
        "0.",
        "--warmup_ratio",
        "0.03",
        "--lr_scheduler_type",
        "cosine",
        "--logging_steps",
        "1",
        "--tf32",
        "True",
        "--model_max_length",
        "2048",
        "--gradient_checkpointing",
        "True",
        "--dataloader_num_workers",
        "0",
        "--lazy_preprocess",
        "True",
        "--report_to",
        "wandb",
        "--max_steps",
        str(steps),
        "--seed",
        "0",
        *TINY_SIZES,
    ]


def pretrain_siglip_args(assets, output_dir, steps=3):
    """LLaVA-NeXT's scripts/train/pretrain_siglip.sh, paths and sizes changed."""
    return [
        "--deepspeed",
        str(ROOT / "scripts" / "zero3.json"),
        "--model_name_or_path",
        assets["gpt2"],
        "--version",
        "plain",
        "--data_path",
        assets["images"],
        "--image_folder",
        assets["image_folder"],
        "--vision_tower",
        assets["siglip"],
        "--mm_tunable_parts=mm_mlp_adapter",
        "--mm_vision_select_layer",
        "-2",
        "--mm_projector_type",
        "mlp2x_gelu",
        "--mm_use_im_start_end",
        "False",
        "--mm_use_im_patch_token",
        "False",
        "--bf16",
        "True",
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--evaluation_strategy",
        "no",
        "--save_strategy",
        "no",
        "--save_steps",
        "50000",
        "--learning_rate",
        "1e-3",
        "--weight_decay",
        "0.",
        "--warmup_ratio",
        "0.03",
        "--lr_scheduler_type",
        "cosine",
        "--logging_steps",
        "1",
        "--tf32",
        "True",
        "--model_max_length",
        "8192",
        "--gradient_checkpointing",
        "True",
        "--dataloader_num_workers",
        "2",
        "--lazy_preprocess",
        "True",
        "--report_to",
        "wandb",
        "--run_name",
        "llavanext-siglip-gpt2-mlp2x_gelu-pretrain_plain",
        "--attn_implementation",
        "sdpa",
        "--max_steps",
        str(steps),
        "--seed",
        "0",
        *TINY_SIZES,
    ]


def ov_to_video_args(assets, output_dir, mixture, steps=2, image_flags=None):
    """LLaVA-NeXT's scripts/video/train/SO400M_Qwen2_7B_ov_to_video_am9.sh, paths and sizes changed.
    `image_flags` replaces the script's anyres flags (which are refused here)."""
    anyres = [
        "--image_aspect_ratio",
        "anyres_max_9",
        "--image_grid_pinpoints",
        "(1x1),...,(6x6)",
        "--mm_patch_merge_type",
        "spatial_unpad",
    ]
    return [
        "--deepspeed",
        str(ROOT / "scripts" / "zero3.json"),
        "--model_name_or_path",
        assets["gpt2"],
        "--version",
        "qwen_1_5",
        "--data_path",
        str(mixture),
        "--image_folder",
        assets["image_folder"],
        "--video_folder",
        assets["video_folder"],
        "--mm_tunable_parts=mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "--mm_vision_tower_lr=2e-6",
        "--vision_tower",
        assets["siglip"],
        "--mm_projector_type",
        "mlp2x_gelu",
        "--mm_vision_select_layer",
        "-2",
        "--mm_use_im_start_end",
        "False",
        "--mm_use_im_patch_token",
        "False",
        "--group_by_modality_length",
        "True",
        *(anyres if image_flags is None else image_flags),
        "--bf16",
        "True",
        "--run_name",
        "llavanext-siglip-gpt2-ov_to_video_am9",
        "--output_dir",
        str(output_dir),
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "1",
        "--per_device_eval_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "2",
        "--evaluation_strategy",
        "no",
        "--save_strategy",
        "steps",
        "--save_steps",
        "500",
        "--save_total_limit",
        "1",
        "--learning_rate",
        "1e-5",
        "--weight_decay",
        "0.",
        "--warmup_ratio",
        "0.03",
        "--lr_scheduler_type",
        "cosine",
        "--logging_steps",
        "1",
        "--tf32",
        "True",
        "--model_max_length",
        "32768",
        "--gradient_checkpointing",
        "True",
        "--dataloader_num_workers",
        "2",
        "--lazy_preprocess",
        "True",
        "--report_to",
        "wandb",
        "--torch_compile",
        "True",
        "--torch_compile_backend",
        "inductor",
        "--dataloader_drop_last",
        "True",
        "--frames_upbound",
        "8",
        "--mm_newline_position",
        "grid",
        "--add_time_instruction",
        "True",
        "--force_sample",
        "True",
        "--mm_spatial_pool_stride",
        "2",
        "--max_steps",
        str(steps),
        "--seed",
        "0",
        *TINY_SIZES,
    ]


def run_train_mem(args, launcher=(), timeout=600, environment=None):
    """`[launcher] llava/train/train_mem.py ARGS` in a fresh process, as the scripts start it (with the
    script's own `environment` variables)."""
    command = [*launcher, TRAIN_MEM, *args] if launcher else [sys.executable, TRAIN_MEM, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(environment or {})}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def without(args, *flags):
    """`args` without the given flags and their values (a flag whose value runs on is given as '--x=')."""
    out, skip = [], False
    for token in args:
        if skip:
            skip = False
            continue
        if token in flags:
            skip = True
            continue
        if any(token.startswith(f"{flag}=") for flag in flags):
            continue
        out.append(token)
    return out


def fork_script_args(script: str, assets, output_dir, data_path, epochs=1):
    """The LLaVA-ST BabyLM fork's train_italian_video.sh or train_ln_t.sh (its 0fadac6 commit) as they call
    train_mem.py: paths changed (their data names media by path from where training starts, so the folders
    are '.' or empty), the epochs a size (80 and 5 there), the tiny run's packer heads and projector width."""
    values = {
        "model_name_or_path": assets["gpt2"], "version": "llama_v2", "data_path": str(data_path),
        "image_folder": ".", "video_folder": "", "vision_tower": assets["tower"], "image_aspect_ratio": "pad",
        "output_dir": str(output_dir), "mm_tunable_parts": "mm_vision_resampler,mm_mlp_adapter,mm_language_model",
        "mm_vision_select_layer": "-2", "mm_projector_type": "mlp2x_gelu", "mm_resampler_type": "fast_slow_resampler",
        "mm_perceiver_latents": "81", "mm_perceiver_latents_fast": "9", "mm_perceiver_depth": "2",
        "use_downsample_image": "False", "fp16": "True", "attn_implementation": "eager",
        "num_train_epochs": str(epochs), "per_device_train_batch_size": "4", "gradient_accumulation_steps": "4",
        "learning_rate": "5e-4", "mm_projector_lr": "5e-4", "stage": "1", "save_strategy": "steps",
        "save_steps": "230", "save_total_limit": "10", "weight_decay": "0.", "warmup_ratio": "0.1",
        "lr_scheduler_type": "cosine", "logging_steps": "2", "model_max_length": "2048",
        "gradient_checkpointing": "True", "dataloader_num_workers": "2", "lazy_preprocess": "True",
        "report_to": "wandb", "video_fps": "1", "frames_upbound": "4", "num_frames": "4", "force_sample": "False",
        "add_time_instruction": "False",
    }  # fmt: skip
    if script == "train_ln_t.sh":  # images of Localized Narratives; no video flags
        for name in (
            "video_folder",
            "video_fps",
            "frames_upbound",
            "num_frames",
            "force_sample",
            "add_time_instruction",
        ):
            del values[name]
        values |= {"mm_perceiver_latents": "64", "mm_perceiver_latents_fast": "32", "attn_implementation": "sdpa"}
        values |= {"per_device_train_batch_size": "16", "save_steps": "2000", "save_total_limit": "50"}
        values |= {"model_max_length": "32768", "fp16": "True"}
    return [token for name, value in values.items() for token in (f"--{name}", value)] + TINY_SIZES


# What each of the fork's scripts exports before training.
FORK_ENVIRONMENT = {
    "train_italian_video.sh": {
        "USE_PLAIN_LM": "1", "MM_PERCEIVER_LATENTS": "81", "MM_PERCEIVER_LATENTS_FAST": "9",
        "BABYLM_ENABLED": "false", "DECORD_EOF_RETRY_MAX": "2048000",
    },
    "train_ln_t.sh": {
        "USE_PLAIN_LM": "1", "MM_PERCEIVER_LATENTS": "64", "MM_PERCEIVER_LATENTS_FAST": "32",
        "BABYLM_ENABLED": "true", "BABYLM_WORD_LIMIT": "100000000",
    },
}  # fmt: skip
