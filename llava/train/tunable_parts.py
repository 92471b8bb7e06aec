"""Which parts of a llava model train: `--mm_tunable_parts` (LLaVA-NeXT's names), LLaVA's older
switches read as LLaVA-NeXT reads them, and the rule that keeps a fresh adapter from staying random.

The adapter is the packer (mm_vision_resampler) with the projector and the position embeddings
(mm_mlp_adapter). This module imports neither torch nor transformers (the command line is read with it).
"""

from __future__ import annotations

import logging

from ..errors import UsageError

logger = logging.getLogger("llava.train")

TUNABLE_PARTS = ("mm_vision_tower", "mm_vision_resampler", "mm_mlp_adapter", "mm_language_model")
ADAPTER_PARTS = ("mm_vision_resampler", "mm_mlp_adapter")
DEFAULT_PARTS = "mm_vision_resampler,mm_mlp_adapter,mm_language_model"

# LLaVA's switches, in the order LLaVA-NeXT's train.py applies them.
LLAVA_SWITCHES = (
    "tune_mm_mlp_adapter",
    "tune_mm_vision_resampler",
    "freeze_backbone",
    "unfreeze_mm_vision_tower",
    "unfreeze_language_model",
    "freeze_mm_mlp_adapter",
    "freeze_mm_vision_resampler",
)


def parse_tunable_parts(parts: str) -> set[str]:
    """The names in a --mm_tunable_parts value; UsageError for a name that is not a part."""
    chosen = {p.strip() for p in parts.split(",") if p.strip()}
    unknown = chosen - set(TUNABLE_PARTS)
    if unknown:
        raise UsageError(f"unknown --mm_tunable_parts {sorted(unknown)}; choose from {', '.join(TUNABLE_PARTS)}")
    return chosen


def from_llava_switches(switches: dict, given_parts: str | None, notes: list) -> str | None:
    """The --mm_tunable_parts value LLaVA's switches (`switches`: name -> bool, those given) mean, or None
    where they leave it alone. `--mm_tunable_parts` decides where given (as in LLaVA-NeXT); otherwise the
    switches are read the way LLaVA-NeXT's train.py reads them, on top of this trainer's default (adapter
    and language model train, the tower is frozen). `notes` gets what to log."""
    on = [name for name in LLAVA_SWITCHES if switches.get(name)]
    if not on:
        return None
    if given_parts is not None:
        notes.append((logging.WARNING, f"--{', --'.join(on)} ignored: --mm_tunable_parts decides what trains"))
        return None
    if switches.get("tune_mm_mlp_adapter") or switches.get("tune_mm_vision_resampler"):
        # LLaVA freezes everything, then unfreezes what is tuned. The adapter here is the packer, the
        # projector and the embeddings: tuning "the MLP adapter" tunes all of it.
        parts = set(ADAPTER_PARTS) if switches.get("tune_mm_mlp_adapter") else {"mm_vision_resampler"}
    else:
        parts = set(parse_tunable_parts(DEFAULT_PARTS))
        if switches.get("freeze_backbone"):
            parts.discard("mm_language_model")
    for switch, part, add in (
        ("freeze_mm_mlp_adapter", "mm_mlp_adapter", False),
        ("freeze_mm_vision_resampler", "mm_vision_resampler", False),
        ("unfreeze_mm_vision_tower", "mm_vision_tower", True),
        ("unfreeze_language_model", "mm_language_model", True),
    ):
        if switches.get(switch):
            (parts.add if add else parts.discard)(part)
    chosen = ",".join(p for p in TUNABLE_PARTS if p in parts)
    notes.append((logging.INFO, f"--{', --'.join(on)}: tunable parts {chosen or '(none)'}"))
    return chosen


def apply_tunable_parts(model, parts: str, fresh_adapter: bool = False, lora_bias: str | None = None) -> None:
    """Sets what trains. Where the adapter starts untrained (`fresh_adapter`: built in this run, not
    loaded) and only part of it is chosen, the rest of it trains too: a random frozen packer or projector
    would make the trained part learn around noise. `lora_bias` (a model with LoRA adapters, and its
    --lora_bias): the language model's own weights stay frozen and its adapters train, whatever the parts
    say of mm_language_model; the visual parts train as they say (LLaVA's LoRA recipe)."""
    chosen = parse_tunable_parts(parts)
    model.requires_grad_("mm_language_model" in chosen and lora_bias is None)
    inner = model.get_model()
    if inner.get_vision_tower() is not None:
        adapter = set(ADAPTER_PARTS)
        if fresh_adapter and chosen & adapter and not adapter <= chosen:
            missing = sorted(adapter - chosen)
            logger.info(
                "the adapter starts untrained in this run: %s trains too (packer, projector and embeddings train together)",
                ", ".join(missing),
            )
            chosen |= adapter
        elif fresh_adapter and not chosen & adapter:
            logger.warning(
                "the packer and the projector start untrained and do not train (--mm_tunable_parts %s)", parts
            )
        inner.vision_tower.requires_grad_("mm_vision_tower" in chosen)
        inner.vision_resampler.requires_grad_("mm_vision_resampler" in chosen)
        inner.mm_projector.requires_grad_("mm_mlp_adapter" in chosen)
        inner.mm_pos_embed.requires_grad_("mm_mlp_adapter" in chosen)
    coordinate_tables_train(model, parts)
    if lora_bias is not None:
        from ..model.lora import train_adapters

        train_adapters(model, lora_bias)
    if not any(p.requires_grad for p in model.parameters()):
        raise UsageError(f"--mm_tunable_parts {parts!r} leaves nothing to train in this model")


def coordinate_tables_train(model, parts: str) -> None:
    """A model's coordinate tables (LLaVA-ST's LAPE) train with the language model, whose words they sit
    beside, and with the adapter, whose visual tokens they place."""
    tables = model.get_model().coordinate_embedding()
    if tables is not None:
        tables.requires_grad_(bool(parse_tunable_parts(parts) & {"mm_language_model", *ADAPTER_PARTS}))
