"""The loading options of LLaVA's `load_pretrained_model` signature, turned into what transformers takes.

LLaVA code passes `device_map`, `torch_dtype` (names such as "float16"), `load_8bit`/`load_4bit`,
`attn_implementation`, `customized_config` and `overwrite_config`, with defaults chosen for a CUDA machine.
Each function here resolves one of them, so that the same call works on a GPU node and on a laptop:
where the machine cannot do what was asked, it either does the nearest thing and says so (attention
kernels), or stops with one line saying why and what to pass instead.
"""

from __future__ import annotations

import logging

import torch

from ..errors import UsageError

logger = logging.getLogger(__name__)

# device_map values that let the loader choose: the one visible GPU, else the CPU.
_AUTO_DEVICE_MAPS = {None, "auto", "balanced", "balanced_low_0", "sequential"}
# The modules that stay in full precision when the language model is quantized.
VISUAL_MODULES = ("vision_tower", "vision_resampler", "mm_projector", "mm_pos_embed")


def resolve_device(device_map=None, device: str | None = None) -> torch.device:
    """The one device the model goes to. `device` (our keyword) wins; else LLaVA's `device_map`: "auto"
    (and the other automatic maps) is the GPU where there is one, else the CPU; a device string, an index,
    or a map that sends every module to the same device, is that device.

    The model is never split across devices: the models trained here fit on one.
    """
    choice = device if device is not None else device_map
    if isinstance(choice, dict):
        targets = set(map(str, choice.values()))
        if len(targets) != 1:
            raise UsageError(
                f"device_map {choice} splits the model over several devices; pass one device (device_map='auto', "
                "'cuda:0' or 'cpu'): the model is loaded whole on it"
            )
        choice = targets.pop()
    if choice in _AUTO_DEVICE_MAPS:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(choice, int) or (isinstance(choice, str) and choice.isdigit()):
        choice = f"cuda:{choice}"
    resolved = torch.device(choice)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"device_map/device {choice!r} asks for a CUDA GPU, but torch sees none on this machine; "
            "pass device_map='auto' (or 'cpu') to load on the CPU"
        )
    return resolved


def resolve_dtype(torch_dtype=None):
    """A torch dtype from LLaVA's `torch_dtype` (a dtype, or a name such as "float16" or "bf16"); None
    for "auto" or nothing, which keeps the checkpoint's own dtype."""
    if torch_dtype is None or isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    name = str(torch_dtype).removeprefix("torch.").lower()
    aliases = {
        "auto": None,
        "fp16": "float16",
        "half": "float16",
        "bf16": "bfloat16",
        "fp32": "float32",
        "float": "float32",
    }
    name = aliases.get(name, name)
    if name is None:
        return None
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise UsageError(
            f"torch_dtype {torch_dtype!r} is not a floating-point dtype; use float16, bfloat16, float32 or auto"
        )
    return dtype


def quantization_config(load_8bit: bool, load_4bit: bool, compute_dtype):
    """bitsandbytes settings for LLaVA's `load_8bit` / `load_4bit` (None when neither is asked for). The
    visual modules stay unquantized. bitsandbytes needs a CUDA GPU and its package; without either this
    stops with one line that says so."""
    if not (load_8bit or load_4bit):
        return None
    if load_8bit and load_4bit:
        raise UsageError("load_8bit and load_4bit are both set; choose one")
    what = "load_8bit" if load_8bit else "load_4bit"
    if not torch.cuda.is_available():
        raise UsageError(
            f"{what} quantizes with bitsandbytes, which needs a CUDA GPU, and torch sees none here; load without "
            "it (torch_dtype='float32' on a CPU, 'float16' or 'bfloat16' on a GPU)"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError(f"{what} needs the bitsandbytes package: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if load_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(VISUAL_MODULES) + ["lm_head"])
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=compute_dtype or torch.float16,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
        llm_int8_skip_modules=list(VISUAL_MODULES) + ["lm_head"],
    )


def attention_request(attn_implementation: str | None, use_flash_attn: bool = False) -> str | None:
    """The attention kernel to ask transformers for. LLaVA's defaults ask for FlashAttention-2
    (`attn_implementation="flash_attention_2"`, `use_flash_attn=True`); where its package or a GPU is
    missing, SDPA computes the same attention, so the call still loads, with a warning."""
    if use_flash_attn and attn_implementation is None:
        attn_implementation = "flash_attention_2"
    if attn_implementation == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if not (torch.cuda.is_available() and is_flash_attn_2_available()):
            logger.warning(
                "flash_attention_2 needs the flash-attn package and a CUDA GPU; using sdpa attention instead"
            )
            return None  # the family's default: SDPA where it has it
    return attn_implementation


def apply_config_options(config, customized_config=None, overwrite_config: dict | None = None):
    """LLaVA's `customized_config` (a config object, or the path of a config.json or of a folder holding
    one) replaces the checkpoint's config; `overwrite_config` then sets each of its keys on it."""
    if customized_config is not None:
        if isinstance(customized_config, str):
            from transformers import AutoConfig

            customized_config = AutoConfig.from_pretrained(customized_config)
        config = customized_config
    for key, value in (overwrite_config or {}).items():
        logger.info("overwrite_config: %s = %r", key, value)
        setattr(config, key, value)
    return config
