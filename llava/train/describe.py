"""What a training run built, in its log: the family, the tower, the packer's grids and token counts,
the projector's shapes, the sequence budget, the batch, and each part's trainable and frozen parameters:
the numbers a researcher checks before a long run."""

from __future__ import annotations

import logging

import torch

from ..modeling.llava_arch import max_positions

logger = logging.getLogger("llava.train")


def _numel(param) -> int:
    return getattr(param, "ds_numel", None) or param.numel()  # ZeRO-3 partitions leave numel() at 0


def _count(module) -> tuple[int, int]:
    trainable = sum(_numel(p) for p in module.parameters() if p.requires_grad)
    return trainable, sum(_numel(p) for p in module.parameters()) - trainable


def describe(built, training_args) -> None:
    """Logs what was built (a train.BuiltModel): the numbers a researcher checks before a long run."""
    model, max_length = built.model, built.max_length
    inner = model.get_model()
    positions = max_positions(model.config)
    lines = [f"family {built.family} ({type(model).__name__}) from {built.path}"]
    parts = {}
    tower = inner.get_vision_tower()
    if tower is not None:
        cfg = model.config
        video, image = inner.num_visual_tokens(cfg.mm_num_frames), inner.num_visual_tokens(1)
        lines.append(
            f"vision tower {cfg.mm_vision_tower} ({tower.config.model_type}, width {tower.hidden_size}, "
            f"{tower.image_size}px -> {tower.grid_size}x{tower.grid_size} patches, layer {cfg.mm_vision_select_layer})"
        )
        if cfg.mm_resampler_type == "fast_slow_token_packer":
            fast, slow = (inner.vision_resampler.fast.grid, inner.vision_resampler.slow.grid)
            lines.append(
                f"packer fast {'x'.join(map(str, fast))} + slow {'x'.join(map(str, slow))}: "
                f"{video} tokens per {cfg.mm_num_frames}-frame clip, {image} per image"
            )
        else:
            lines.append(f"no resampler: {video} tokens per clip, {image} per image")
        linears = [m for m in inner.mm_projector.modules() if isinstance(m, torch.nn.Linear)]
        shape = (
            " -> ".join([str(linears[0].in_features)] + [str(m.out_features) for m in linears])
            if linears
            else "identity"
        )
        lines.append(f"projector {cfg.mm_projector_type}: {shape}")
        parts = {
            "vision tower": inner.vision_tower,
            "resampler": inner.vision_resampler,
            "projector": inner.mm_projector,
            "embeddings": inner.mm_pos_embed,
        }
        lines.append(
            f"sequence budget: {video} visual + up to {max_length - video} text = {max_length} "
            f"(language model positions: {positions})"
        )
    else:
        lines.append(f"text only; sequence budget {max_length} (positions: {positions})")
    per_device, accumulation, world = (
        training_args.per_device_train_batch_size,
        training_args.gradient_accumulation_steps,
        training_args.world_size,
    )
    lines.append(
        f"batch {per_device} per device x {accumulation} accumulation x {world} processes = "
        f"{per_device * accumulation * world} samples per optimizer step"
    )
    visual_ids = {id(p) for m in parts.values() for p in m.parameters()}
    lm_trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad and id(p) not in visual_ids)
    lm_total = sum(_numel(p) for p in model.parameters() if id(p) not in visual_ids)
    counts = {name: _count(m) for name, m in parts.items()}
    counts["language model"] = (lm_trainable, lm_total - lm_trainable)
    for name, (trainable, frozen) in counts.items():
        lines.append(f"  {name:<15} trainable {trainable:>12,}  frozen {frozen:>12,}")
    logger.info("built:\n  %s", "\n  ".join(lines))
