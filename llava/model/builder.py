"""Choosing and loading a llava model from a checkpoint folder.

Training, export and callers of the seed's API import `family_of`, `STOCK_TO_LLAVA` and `LLAVA_TO_STOCK`
from here. The families are rows of one table (llava/modeling/families.py); one place decides what a
model folder is and which family loads it (model_folder.py).
"""

from __future__ import annotations

import json
import logging
import os

from ..errors import InputError
from ..modeling.adapter_weights import load_adapter_weights
from ..modeling.expected_warnings import stock_config_in_family
from ..modeling.families import BY_LLAVA_TYPE, LLAVA_TO_STOCK, STOCK_TO_LLAVA
from ..modeling.vision_settings import VisionSettings
from ..modeling.vision_tower import tower_architecture
from .load_options import apply_config_options, attention_request, quantization_config, resolve_device, resolve_dtype
from .lora import STACK_KEY, check_lora_folder, merge_adapters
from .model_folder import (  # noqa: F401
    ADAPTER_FILES,
    MissingModelFile,
    adapter_file,
    check_model_folder,
    config_file_of,
    family_from_config,
    family_of,
    is_llava_checkpoint,
    is_lora_folder,
    read_config,
)

logger = logging.getLogger(__name__)


def causal_lm_class(family: str):
    """The causal-LM class of a family, e.g. LlavaGPT2ForCausalLM for 'llava_gpt2'."""
    from .. import model as package

    return getattr(package, BY_LLAVA_TYPE[family].causal_lm)


def attention_implementation(cls, requested: str | None = None) -> str:
    """SDPA unless asked otherwise, where the family has it (transformers' MPT has eager attention only)."""
    if requested:
        return requested
    if getattr(cls, "_supports_sdpa", False):
        return "sdpa"
    logger.info("%s has no SDPA attention in transformers; using eager", cls.__name__)
    return "eager"


def from_pretrained(family: str, path: str, attn_implementation: str | None = None, **kwargs):
    """A family's model from a folder, with SDPA attention by default."""
    cls = causal_lm_class(family)
    with stock_config_in_family(LLAVA_TO_STOCK[family], family):
        return cls.from_pretrained(
            path, attn_implementation=attention_implementation(cls, attn_implementation), **kwargs
        )


# Settings of the language model that an adapter was trained against; a base LM that differs in one
# of them is not the one the adapter fits.
_LM_SHAPE_KEYS = ("vocab_size", "hidden_size", "n_embd", "d_model", "num_hidden_layers", "n_layer", "n_layers")


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map="auto",
    torch_dtype=None,
    attn_implementation: str | None = None,
    customized_config=None,
    overwrite_config=None,
    *,
    device: str | None = None,
    dtype=None,
    vision_tower: str | None = None,
    **kwargs,
):
    """`(tokenizer, model, image_processor, context_len)` for inference, any of the seven families.

    LLaVA's signature and positional order. `model_name` is accepted for LLaVA's callers and not needed:
    the family comes from the checkpoint's config.json.

    - `model_base=None`: `model_path` is a full llava checkpoint (or a plain language model); its config
      rebuilds everything (tower, packer, projector, embeddings) and its weights fill it.
    - `model_base` given: `model_path` is the folder of an adapter-only run (or its `mm_projector.bin`
      itself) holding the adapter and the run's `config.json`. The language model comes from
      `model_base`; the visual modules are rebuilt from the run's `mm_*` settings, the tower's weights
      from the folder its `mm_vision_tower` names (or from `vision_tower`, where it has moved), and the
      adapter (resampler, projector, embeddings) from the file.
    - `model_base` given and `model_path` a LoRA run's folder (LLaVA names such folders `...-lora`; here
      what the folder holds decides): the model the run trained is rebuilt as above (or loaded whole
      where `model_base` is a llava checkpoint), its `non_lora_trainables.bin` loaded, and its LoRA
      adapter merged into the weights, after the adapters it was trained on top of (lora.py).

    Where it goes and how (see load_options): `device` (or LLaVA's `device_map`; "auto" is the GPU where
    there is one, else the CPU), `dtype` (or `torch_dtype`, a dtype or its name; default the checkpoint's),
    `load_8bit`/`load_4bit` (bitsandbytes, CUDA only), `attn_implementation` (SDPA by default; LLaVA's
    FlashAttention-2 request falls back to SDPA where it cannot run), `customized_config` and
    `overwrite_config` (applied to the config before the weights are loaded). Other keyword arguments go
    to transformers' `from_pretrained`, as in LLaVA; `multimodal=` (lmms-eval) is accepted and not needed.

    The image processor is the tower's (None for a text-only model); `context_len` is the language
    model's number of positions. A tokenizer without a pad token pads with EOS, as in training. The model
    is in eval mode.
    """
    from transformers import AutoTokenizer

    from ..modeling.llava_arch import max_positions

    del model_name  # LLaVA picks a code path by name; here the folder's files say what it holds
    kwargs.pop("multimodal", None)
    attn = attention_request(
        attn_implementation, bool(kwargs.pop("use_flash_attn", False) or kwargs.pop("use_flash_attention_2", False))
    )
    target = resolve_device(device_map, device)
    dtype = resolve_dtype(dtype if dtype is not None else torch_dtype)
    quantization = quantization_config(load_8bit, load_4bit, dtype)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if quantization is not None:  # bitsandbytes places the weights itself
        kwargs.update(quantization_config=quantization, device_map={"": target.index or 0})
    kwargs["attn_implementation"] = attn
    options = (customized_config, overwrite_config)
    if model_base is None:
        family = family_from_config(check_model_folder(model_path, "--model-path"), model_path)
        model = from_pretrained(family, model_path, config=_config(family, model_path, *options), **kwargs)
        tokenizer_path = model_path
    else:
        if is_lora_folder(model_path):
            model = _model_from_base_and_lora(model_path, model_base, vision_tower, options, kwargs)
        else:
            model = _model_from_base_and_adapter(model_path, model_base, vision_tower, options, kwargs)
        folder = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
        tokenizer_path = folder if os.path.isfile(os.path.join(folder, "tokenizer_config.json")) else model_base
    if quantization is None:
        model = model.to(target)
    model = model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    if tokenizer.pad_token_id is None:  # as in training: EOS pads, masks come from lengths
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    tower = model.get_vision_tower()
    return tokenizer, model, (tower.image_processor if tower is not None else None), max_positions(model.config)


def _config(family: str, path: str, customized_config=None, overwrite_config=None):
    """The family's config of `path` with LLaVA's config options applied (None: the checkpoint's own)."""
    if customized_config is None and not overwrite_config:
        return None
    from transformers import AutoConfig

    config = apply_config_options(AutoConfig.from_pretrained(path), customized_config, overwrite_config)
    config_class = causal_lm_class(family).config_class
    if not isinstance(config, config_class):  # a stock config (gpt2) describes the same language model
        config = config_class.from_dict(config.to_dict())
    return config


def _model_from_base_and_adapter(
    model_path: str, model_base: str, vision_tower: str | None, options: tuple, kwargs: dict
):
    """The base language model with the visual modules of an adapter-only run (see load_pretrained_model)."""
    if os.path.isdir(model_path):
        folder, adapter = model_path, adapter_file(model_path)
        if adapter is None:
            raise MissingModelFile(
                f"--model-path holds no adapter ({' or '.join(ADAPTER_FILES)}): with --model-base it must be the output "
                "folder of an adapter-only run (--mm_tunable_parts mm_vision_resampler,mm_mlp_adapter); a full checkpoint "
                f"loads without --model-base ({model_path})"
            )
    elif os.path.isfile(model_path):
        folder, adapter = os.path.dirname(model_path) or ".", model_path
    else:
        raise MissingModelFile(f"--model-path does not exist ({model_path})")
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        raise MissingModelFile(
            "config.json is missing beside the adapter: its run writes the mm_* settings there, and without them the "
            f"visual modules cannot be rebuilt ({config_file})"
        )
    run = read_config(config_file, "--model-path")
    if not run.get("mm_vision_tower") or not run.get("mm_vision_config"):
        raise InputError(
            f"--model-path config.json has no mm_vision_tower/mm_vision_config: not the config of a visual run ({config_file})"
        )
    base_config = check_model_folder(model_base, "--model-base")
    if is_llava_checkpoint(base_config):
        raise InputError(
            f"--model-base already has visual modules: pass the plain language model the adapter was trained on ({model_base})"
        )
    model = _base_for_run(run, config_file, model_base, base_config, vision_tower, options, kwargs)
    load_adapter_weights(model.get_model(), adapter)
    if "dtype" in kwargs:
        model = model.to(kwargs["dtype"])
    return model


def _model_from_base_and_lora(model_path: str, model_base: str, vision_tower: str | None, options: tuple, kwargs: dict):
    """The model a LoRA run trained, its adapters merged (see load_pretrained_model). The base is the
    language model the run started from: a plain one (the visual modules rebuilt from the run's config,
    as for an adapter-only run) or a llava checkpoint (loaded whole)."""
    config_file = check_lora_folder(model_path)
    run = read_config(config_file, "--model-path")
    base_config = check_model_folder(model_base, "--model-base")
    if run.get("mm_vision_tower") and not is_llava_checkpoint(base_config):
        model = _base_for_run(run, config_file, model_base, base_config, vision_tower, options, kwargs, lora=True)
    else:
        family = _family_for_run(run, base_config, model_base, model_path)
        model = from_pretrained(family, model_base, config=_config(family, model_base, *options), **kwargs)
    model, _ = merge_adapters(model, model_path, run)
    if model.config.vocab_size != run.get("vocab_size", model.config.vocab_size):
        raise InputError(
            f"the LoRA run's vocabulary has {run['vocab_size']} tokens, the merged model {model.config.vocab_size}: "
            f"--model-base is not the language model it was trained on ({model_base}, {config_file})"
        )
    _take_run_settings(model.config, run)
    if "dtype" in kwargs:
        model = model.to(kwargs["dtype"])
    return model


# The run's config.json keys that describe how it was saved or trained, not the model: the loaded model
# keeps its own (use_cache: training turns the cache off; inference wants it).
_BOOKKEEPING_KEYS = {
    "architectures",
    "transformers_version",
    "_name_or_path",
    "model_type",
    "dtype",
    "torch_dtype",
    "use_cache",
}


def _take_run_settings(config, run: dict) -> None:
    """The settings a LoRA run recorded (its prompt template, prompt options, ...) onto the merged model's
    config, as LLaVA loads its base with the run's config. The adapter list is not taken: the weights now
    hold those adapters."""
    for key, value in run.items():
        if key not in _BOOKKEEPING_KEYS and key != STACK_KEY and key not in _LM_SHAPE_KEYS:
            setattr(config, key, value)


def _family_for_run(run: dict, base_config: dict, model_base: str, folder: str) -> str:
    """The family of `model_base`, which must be the run's."""
    family = family_from_config(base_config, model_base)
    run_family = run.get("model_type")
    run_family = STOCK_TO_LLAVA.get(run_family, run_family)
    if run_family in BY_LLAVA_TYPE and run_family != family:
        raise InputError(
            f"the adapter was trained on a {run_family} model, but --model-base is a {family} model ({folder}, {model_base})"
        )
    return family


def _base_for_run(
    run: dict,
    config_file: str,
    model_base: str,
    base_config: dict,
    vision_tower: str | None,
    options: tuple,
    kwargs: dict,
    lora: bool = False,
):
    """A plain base language model with the visual modules a run's config describes (the tower's weights
    from its folder), before the run's own weights are loaded. `lora`: the run may have grown the
    vocabulary (its non-LoRA weights then hold the embeddings, and loading them grows the base's)."""
    from ..modeling.vision_tower import image_processor_from_dict

    folder = os.path.dirname(config_file)
    family = _family_for_run(run, base_config, model_base, folder)
    model = from_pretrained(family, model_base, config=_config(family, model_base, *options), **kwargs)
    base = model.config.to_dict()
    keys = [k for k in _LM_SHAPE_KEYS if not (lora and k == "vocab_size")]
    differing = {k: (base[k], run[k]) for k in keys if k in base and k in run and base[k] != run[k]}
    if differing:
        raise InputError(
            "--model-base is not the language model the adapter was trained on: "
            + ", ".join(f"{k} {a} (base) vs {b} (run)" for k, (a, b) in differing.items())
            + f" ({model_base}, {config_file})"
        )

    tower_path = vision_tower or run["mm_vision_tower"]
    _check_tower_available(tower_path, config_file)
    # The run's settings as its config recorded them; its weights are loaded by the caller.
    model.get_model().initialize_vision_modules(VisionSettings.from_config(run).replace(vision_tower=tower_path))

    config = model.config
    built, trained = tower_architecture(config.mm_vision_config), tower_architecture(run["mm_vision_config"])
    changed = sorted(k for k in built.keys() & trained.keys() if built[k] != trained[k])
    if changed:
        raise InputError(
            "the vision tower is not the one the adapter was trained with: "
            + ", ".join(f"{k} {built[k]!r} != {trained[k]!r}" for k in changed[:8])
            + f" ({tower_path})"
        )
    if run.get("mm_image_processor") and run["mm_image_processor"] != json.loads(json.dumps(config.mm_image_processor)):
        # Preprocess exactly as the run did: its recorded processor wins over the folder's.
        logger.warning("the tower folder's image processor differs from the run's; using the run's")
        model.get_vision_tower().image_processor = image_processor_from_dict(run["mm_image_processor"])
        config.mm_image_processor = run["mm_image_processor"]
    return model


def _check_tower_available(tower_path: str, config_file: str) -> None:
    """An adapter-only run does not carry its tower's weights: they come from the folder its config names."""
    from transformers import AutoConfig

    try:
        config_file_of(tower_path, "the vision tower")  # a missing folder fails here, without asking the hub
        AutoConfig.from_pretrained(tower_path)
    except (OSError, ValueError):
        raise MissingModelFile(
            "the vision tower cannot be loaded: an adapter-only run does not carry the tower's weights, they come from "
            f"the folder that mm_vision_tower names in {config_file}; make it available there, or pass where it is now "
            f"(--vision-tower PATH, load_pretrained_model(..., vision_tower=PATH)) ({tower_path})"
        ) from None
