"""LoRA in a training run: --load_lora_path's adapters merged into the built model, --lora_enable's fresh
adapters added to it, and the vocabulary's new rows kept. What the adapters are and how their folders are
written and read is llava/model/lora.py's; which other parts train is tunable_parts.py's."""

from __future__ import annotations

import logging
import os

from ..errors import UsageError
from ..model.lora import STACK_KEY, adapter_stack, add_lora, check_lora_folder, merge_adapters
from ..model.model_folder import read_config
from .trainer import is_adapter_parameter

logger = logging.getLogger("llava.train")


def merge_earlier_adapters(model, path: str) -> tuple[object, list[str], bool]:
    """--load_lora_path (LLaVA-ST's stacked adapters): `model` with the adapters of an earlier LoRA run's
    folder merged in (after the ones that run was trained on top of), with its non-LoRA weights loaded.
    Returns the merged model, the folders merged (absolute paths, in order: what a LoRA run on top of them
    records) and whether their weights included the visual adapter (packer, projector, embeddings)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise UsageError(
            "--load_lora_path merges an adapter into whole weights, which DeepSpeed ZeRO-3 partitions: "
            "use ZeRO-2 (scripts/zero2.json), or merge first with python -m llava.model.merge_lora"
        )
    run = read_config(check_lora_folder(path, "--load_lora_path"), "--load_lora_path")
    folders = [os.path.abspath(folder) for folder in adapter_stack(path, run)]
    model, loaded = merge_adapters(model, path, run)
    logger.info("merged the LoRA adapters of %s into the model", ", ".join(folders))
    return model, folders, any(is_adapter_parameter(name) for name in loaded)


def add_adapters(model, lora, merged: list[str]):
    """`model` wrapped with fresh LoRA adapters as `lora` (arguments.LoraArguments) says. `merged`: the
    adapter folders already merged into its weights, recorded in its config so that loading the run's
    folder merges them first."""
    model = add_lora(model, lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.lora_bias)
    if merged:
        setattr(model.config, STACK_KEY, merged)
    adapters = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    logger.info(
        "LoRA adapters (r %d, alpha %d) on %d layers of the language model: %s parameters",
        lora.lora_r,
        lora.lora_alpha,
        len(model.peft_config["default"].target_modules),
        f"{adapters:,}",
    )
    return model


def train_grown_embeddings(model, rows_before: int) -> None:
    """Where this run added tokens to the vocabulary (LLaVA's <im_start>/<im_end>, coordinate tokens), the
    language model's embeddings train beside the adapters, as LLaVA-ST's LoRA stage trains them: their new
    rows would otherwise stay random, and no adapter file would carry them."""
    embeddings = model.get_input_embeddings()
    if embeddings.num_embeddings <= rows_before:
        return
    embeddings.requires_grad_(True)
    head = model.get_output_embeddings()
    if head is not None:
        head.requires_grad_(True)
    logger.info(
        "the vocabulary grew from %d to %d tokens: the embeddings train with the LoRA adapters "
        "(saved in non_lora_trainables.bin)",
        rows_before,
        embeddings.num_embeddings,
    )
