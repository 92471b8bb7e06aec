"""LoRA adapters on the language model of a llava model, trained and loaded as LLaVA does it (with peft).

Where they go: every linear layer of the language model (GPT-2's are transformers' `Conv1D`, whose weights
are stored transposed, so peft adapts them with `fan_in_fan_out`), and nowhere else: the tower stays
frozen, the packer and the projector train whole where --mm_tunable_parts names them (LLaVA's recipe), and
the output head (tied to the embeddings in GPT-2) keeps its weights.

A LoRA run's folder holds what LLaVA's holds: peft's adapter (adapter_config.json,
adapter_model.safetensors), `non_lora_trainables.bin` (every other weight that trained: the packer, the
projector, the position embeddings, ...) and the run's config.json. It loads onto the model it was
trained on: the non-LoRA weights first, then the adapter, merged into the weights (`merge_adapters`).

Stacked adapters (LLaVA-ST's --load_lora_path): a run whose language model had earlier adapters merged
into it records their folders, in order, under `lora_merged_adapters` in its config.json; loading merges
them first, so that a folder never loads onto a model without the adapters it was trained on top of.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import torch
from transformers.pytorch_utils import Conv1D

from ..errors import InputError, listing
from ..modeling.zero3 import gathered_parameters
from .model_folder import LORA_CONFIG_FILE, MissingModelFile, is_lora_folder, read_config

logger = logging.getLogger(__name__)

LORA_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
NON_LORA_FILE = "non_lora_trainables.bin"
STACK_KEY = "lora_merged_adapters"
BIASES = ("none", "all", "lora_only")

# peft wraps the model: its parameters appear under this prefix, and an adapted layer's own weights
# under `.base_layer.`; the adapters' parameters are named lora_A, lora_B, ...
_WRAPPED = "base_model.model."
_BASE_LAYER = ".base_layer."
# Every visual module of a llava model is named vision_* or mm_* (tower, packer, projector, position and
# coordinate embeddings).
_VISUAL = ("vision_", "mm_")


def is_lora_parameter(name: str) -> bool:
    return "lora_" in name


def is_visual(name: str) -> bool:
    return any(part.startswith(_VISUAL) for part in name.split("."))


def is_lora_model(model) -> bool:
    """Whether `model` carries LoRA adapters (peft's wrapper). Where peft was never imported no model can
    be one: asking (as every save does) imports nothing."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def language_model_layers(model) -> tuple[list[str], bool]:
    """The full names of the language model's linear layers, and whether they are `Conv1D` (GPT-2)."""
    head = model.get_output_embeddings()
    names, kinds = [], set()
    for name, module in model.named_modules():
        if module is head or is_visual(name) or not isinstance(module, torch.nn.Linear | Conv1D):
            continue
        names.append(name)
        kinds.add(type(module) is Conv1D)
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layers in its language model for LoRA to adapt")
    if len(kinds) > 1:  # peft's fan_in_fan_out is one setting for every layer of an adapter
        raise ValueError(f"{type(model).__name__} mixes Linear and Conv1D layers; LoRA here adapts one kind")
    return names, kinds.pop()


def add_lora(model, r: int = 64, alpha: int = 16, dropout: float = 0.05, bias: str = "none"):
    """`model` wrapped by peft with fresh LoRA adapters (r, alpha, dropout, bias as LLaVA's flags) on its
    language model's linear layers. peft leaves only the adapters (and the biases `bias` names)
    trainable; training then chooses the other parts that train (tunable_parts.apply_tunable_parts)."""
    from peft import LoraConfig, get_peft_model

    if bias not in BIASES:
        raise ValueError(f"--lora_bias {bias}: choose one of {', '.join(BIASES)}")
    targets, conv1d = language_model_layers(model)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias=bias,
        target_modules=targets,
        fan_in_fan_out=conv1d,
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(model, config)
    # peft's save compares the vocabulary with the base model's folder (reading it, or asking the hub, at
    # every save) to decide whether to save the embeddings too; here a run that grows the vocabulary trains
    # its embeddings, and they are saved with the other non-LoRA weights.
    wrapped.save_pretrained = functools.partial(type(wrapped).save_pretrained, wrapped, save_embedding_layers=False)
    return wrapped


def train_adapters(model, bias: str = "none") -> None:
    """Makes the adapters trainable again, with the biases `bias` names (all: every bias of the language
    model; lora_only: those of the adapted layers): choosing the tunable parts freezes the language model."""
    for name, param in model.named_parameters():
        if is_lora_parameter(name) or (name.endswith(".bias") and _bias_trains(name, bias)):
            param.requires_grad_(True)


def _bias_trains(name: str, bias: str) -> bool:
    if bias == "all":
        return not is_visual(name)
    return bias == "lora_only" and _BASE_LAYER in name


def plain_name(name: str) -> str:
    """A parameter's name in the model without its adapters (peft's prefix and `.base_layer` removed)."""
    return name.removeprefix(_WRAPPED).replace(_BASE_LAYER, ".")


# ------------------------------------------------------------------------------------------ saving
def save_non_lora_weights(model, folder: str, state_dict: dict | None = None) -> None:
    """Writes a LoRA model's `non_lora_trainables.bin` (every trainable weight that is not an adapter,
    named as in the model without adapters) and its config.json into `folder`, beside the adapter that
    peft's `save_pretrained` writes. `state_dict`: weights gathered for saving (DeepSpeed), where given."""
    weights = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or is_lora_parameter(name):
            continue
        value = state_dict.get(name) if state_dict else None
        if value is None:
            holder = torch.nn.Module()
            holder.weight = param
            with gathered_parameters(holder):  # a ZeRO-3 partition is gathered whole
                value = param.detach().clone()
        weights[plain_name(name)] = value.detach().cpu().contiguous()
    torch.save(weights, os.path.join(folder, NON_LORA_FILE))
    model.get_base_model().config.save_pretrained(folder)


# ----------------------------------------------------------------------------------------- loading
def check_lora_folder(folder: str, what: str = "--model-path") -> str:
    """The config.json of a LoRA run's folder, after checking that the folder holds what loading needs."""
    if not os.path.isdir(folder):
        raise MissingModelFile(f"{what} folder does not exist ({folder})")
    if not is_lora_folder(folder):
        raise MissingModelFile(
            f"{what} folder holds no LoRA adapter ({LORA_CONFIG_FILE}): give the output folder of a --lora_enable run ({folder})"
        )
    if not any(os.path.isfile(os.path.join(folder, name)) for name in LORA_WEIGHT_FILES):
        raise MissingModelFile(
            f"{what} folder has {LORA_CONFIG_FILE} but no adapter weights ({LORA_WEIGHT_FILES[0]}): was it copied completely? ({folder})"
        )
    for name in ("config.json", NON_LORA_FILE):
        if not os.path.isfile(os.path.join(folder, name)):
            raise MissingModelFile(
                f"{what} folder has a LoRA adapter but no {name}: the run writes it beside the adapter; was it copied completely? ({folder})"
            )
    return os.path.join(folder, "config.json")


def load_non_lora_weights(model, folder: str) -> list[str]:
    """Loads a LoRA folder's `non_lora_trainables.bin` into `model` (with or without adapters); returns the
    names loaded. Keys may carry peft's prefix, as LLaVA's files do. The input embeddings grow first where
    the file's have more rows (tokens added by the run)."""
    path = os.path.join(folder, NON_LORA_FILE)
    weights = {plain_name(k): v for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
    target = model.get_base_model() if is_lora_model(model) else model
    _grow_embeddings(target, weights)
    _add_coordinate_tables(target, folder, weights)
    names = {plain_name(k): k for k in target.state_dict() if not is_lora_parameter(k)}
    unexpected = sorted(set(weights) - set(names))
    if unexpected:
        raise InputError(f"{NON_LORA_FILE} does not fit the model: it holds {listing(unexpected, 3)} ({path})")
    try:
        target.load_state_dict({names[k]: v for k, v in weights.items()}, strict=False)
    except RuntimeError as e:  # shapes that differ: torch lists every one, over several lines
        detail = " ".join(str(e).split("\n\t")[1:2]) or str(e).splitlines()[0]
        raise InputError(f"{NON_LORA_FILE} does not fit the model: {detail.strip()} ({path})") from None
    return sorted(weights)


def _grow_embeddings(model, weights: dict) -> None:
    embeddings = model.get_input_embeddings().weight
    name = next((n for n, p in model.named_parameters() if p is embeddings), None)
    saved = weights.get(plain_name(name)) if name else None
    if saved is not None and saved.shape[0] > embeddings.shape[0]:
        model.resize_token_embeddings(saved.shape[0])


def _add_coordinate_tables(model, folder: str, weights: dict) -> None:
    """Where the run gave its model coordinate tokens (--coordinate_tokens, LLaVA-ST's stage 2), the model
    they load into gets the tables first, as the run's config describes them (their weights follow)."""
    if not any(".mm_coordinates." in f".{name}" for name in weights) or model.get_model().coordinate_embedding():
        return
    run = read_config(os.path.join(folder, "config.json"), "the LoRA folder")
    for key in ("mm_coordinate_bins", "mm_coordinate_placeholder_ids"):
        setattr(model.config, key, run[key])
    model.get_model().build_coordinate_embedding()


def adapter_stack(folder: str, config: dict) -> list[str]:
    """The LoRA folders whose adapters make the model a LoRA folder was trained on, in order, and the
    folder itself last. `config`: the folder's config.json."""
    earlier = list(config.get(STACK_KEY) or [])
    for path in earlier:
        if not is_lora_folder(path):
            raise MissingModelFile(
                f"this adapter was trained on top of the LoRA adapter in {path} ({STACK_KEY} in its config.json), "
                f"which is not there now: put that folder back where it was ({folder})"
            )
    return [*earlier, folder]


def merge_adapter(model, folder: str):
    """`model` (without adapters) with a LoRA folder's non-LoRA weights and its adapter merged in, and
    the names of the non-LoRA weights loaded."""
    from peft import PeftModel

    loaded = load_non_lora_weights(model, folder)
    try:
        wrapped = PeftModel.from_pretrained(model, folder)
    except (ValueError, KeyError, RuntimeError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"the LoRA adapter does not fit the model: {reason[:300]} ({folder})") from None
    merged = wrapped.merge_and_unload()
    logger.info("merged the LoRA adapter of %s", folder)
    return merged, loaded


def merge_adapters(model, folder: str, config: dict):
    """`model` with every adapter of `adapter_stack(folder, config)` merged in, in order, and the names of
    the non-LoRA weights loaded. The merged model carries no adapter list in its config: its weights
    hold those adapters."""
    loaded = set()
    for path in adapter_stack(folder, config):
        model, names = merge_adapter(model, path)
        loaded.update(names)
    forget_stack(model.config)
    return model, sorted(loaded)


def forget_stack(config) -> None:
    if hasattr(config, STACK_KEY):
        delattr(config, STACK_KEY)
