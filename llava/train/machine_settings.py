"""Settings whose meaning depends on the machine, decided for this one, so that the same command line (or
recipe) runs on a laptop and on a GPU cluster:

- `--bf16 auto` / `--fp16 auto`: mixed precision as the GPUs allow (bf16 on A100/H100, fp16 on V100/T4,
  neither on a CPU);
- `--tf32 True` is dropped with a warning where no GPU has TF32;
- `--report_to` integrations that are not installed are dropped with a warning;
- `--torch_compile` is dropped with a warning under DeepSpeed ZeRO-3 (it fails there with this code);
- without CUDA, `--use_cpu True` unless the settings say otherwise (transformers' Trainer would
  otherwise believe it has one GPU, and DeepSpeed's batch checks fail).
"""

from __future__ import annotations

import json
import logging
import os

from .legacy_flags import Note, as_bool

COMPILE_FLAGS = ("torch_compile", "torch_compile_backend", "torch_compile_mode")
# Why --torch_compile is dropped under ZeRO-3: two failures seen on this code with torch 2.13, DeepSpeed
# 0.19.8 and accelerate 1.15 (the first with the inductor and eager backends, the second with eager; the same
# runs under ZeRO-2 or without DeepSpeed train).
ZERO3_COMPILE = (
    "torch.compile fails under ZeRO-3 here: it traces partitioned parameters as empty tensors (SigLIP's "
    "attention-pooling head: 'b must be 2D'), and a text-only batch sends the compiled forward into endless "
    "recursion; the run goes on uncompiled (ZeRO-2, or no DeepSpeed, compiles)"
)

# What each setting means here (for the documentation of LLaVA's flags).
MACHINE_FLAGS = {
    "bf16": "`auto` is True on GPUs with bf16 (A100, H100, ...), else False",
    "fp16": "`auto` is True on GPUs without bf16 (V100, T4) where --bf16 is off, else False",
    "tf32": "kept where the GPU has TF32, dropped with a warning elsewhere (a CPU)",
    "report_to": "integrations that are not installed are dropped with a warning",
    "torch_compile": "honoured, except under DeepSpeed ZeRO-3: dropped there with a warning saying why",
}


def for_this_machine(settings: dict[str, object]) -> tuple[dict[str, object], list[Note]]:
    """The settings with the machine-dependent ones decided for this machine, and what to log."""
    import torch

    settings, notes = dict(settings), []
    if "use_cpu" not in settings and not torch.cuda.is_available():
        settings["use_cpu"] = True
    for name in ("bf16", "fp16"):
        if _is_auto(settings.get(name)):
            settings[name] = _auto_precision(name, settings)
    if "tf32" in settings and as_bool(settings["tf32"], "--tf32") and not _tf32_available():
        del settings["tf32"]
        notes.append(
            (logging.WARNING, "--tf32 True is dropped: this machine has no GPU with TF32 (it is kept on one that has)")
        )
    if "report_to" in settings:
        settings["report_to"] = _available_reporters(settings["report_to"], notes)
    compiling = any(name in settings for name in COMPILE_FLAGS[1:]) or as_bool(
        settings.get("torch_compile", False), "--torch_compile"
    )
    if compiling and settings.get("deepspeed") and zero_stage(str(settings["deepspeed"])) == 3:
        for name in COMPILE_FLAGS:
            settings.pop(name, None)
        notes.append((logging.WARNING, f"--torch_compile is dropped under DeepSpeed ZeRO-3: {ZERO3_COMPILE}"))
    return settings, notes


def zero_stage(deepspeed: str) -> int | None:
    """The ZeRO stage of a --deepspeed config (a JSON file or a JSON string); None where it says none."""
    try:
        if os.path.isfile(deepspeed):
            with open(deepspeed, encoding="utf-8") as f:
                config = json.load(f)
        else:
            config = json.loads(deepspeed)
    except (OSError, ValueError):
        return None  # transformers reports an unreadable config itself
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    return int(stage) if isinstance(stage, (int, str)) and str(stage).isdigit() else None


def _is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == "auto"


def _auto_precision(name: str, settings: dict) -> bool:
    """`--bf16 auto` / `--fp16 auto`: mixed precision as the GPUs allow; none on a CPU, fp16 only where
    bf16 is off and the GPUs lack it (an explicit --bf16 False on an A100 stays in float32)."""
    import torch

    if not torch.cuda.is_available():
        return False
    has_bf16 = torch.cuda.is_bf16_supported()
    if name == "bf16":
        return has_bf16
    bf16 = settings.get("bf16", False)
    bf16_on = has_bf16 if _is_auto(bf16) else as_bool(bf16, "--bf16")
    return not bf16_on and not has_bf16


def _tf32_available() -> bool:
    from transformers.utils import is_torch_tf32_available

    return is_torch_tf32_available()


def _available_reporters(value, notes: list[Note]) -> str:
    """The integrations of `--report_to a,b` (or a list) that are installed ('all' and 'none' pass through)."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    text = " ".join(map(str, value)) if isinstance(value, list) else str(value or "")
    names = [n.strip() for n in text.replace(",", " ").split() if n.strip()]
    if not names or any(n in ("all", "none") for n in names):
        return text or "none"
    available = set(get_available_reporting_integrations())
    missing = [n for n in names if n in INTEGRATION_TO_CALLBACK and n not in available]
    for name in missing:
        notes.append(
            (
                logging.WARNING,
                f"--report_to {name} is dropped: the {name} package is not installed (pip install {name} to report there)",
            )
        )
    kept = [n for n in names if n not in missing]
    return ",".join(kept) if kept else "none"
