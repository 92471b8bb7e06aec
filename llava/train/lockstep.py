"""Ranks in lockstep: in every step every rank runs the same modules in the same order.

Collectives pair up across ranks by their order alone. When one rank's batch holds a clip and another's
only text (or nothing: every clip unreadable), the ranks run different modules and their collectives
stop pairing up. Seen on two CPU ranks with gloo:
- DeepSpeed ZeRO-2 reduces gradients in buckets filled in the order the gradients arrive. A text-only
  rank has no gradient for the packer, projector and embeddings, and a rank that runs no forward (its
  loss a zero times every parameter) fills its buckets in parameter order: the bucket sizes differ and
  gloo aborts ("3072 vs 192 ... collective mismatch").
- ZeRO-3 gathers a module's parameters when the module runs: a text-only rank gathers the language
  model's while a video rank gathers the tower's (a mismatch); a rank without a forward reduces empty
  gradients ("0 != 128 Cannot reduce scatter").
- DDP all-reduces gradients from hooks that its forward arms. A rank that runs no forward reduces
  nothing and moves on to the next collective while the others wait for its gradients: a hang until
  the collective timeout. Without find_unused_parameters (the Trainer's choice under activation
  checkpointing), a module one rank leaves out is waited for the same way.

DDP's find_unused_parameters=True covers only the DDP text-only case (and costs a graph traversal per
step); static_graph needs the same parameters in every step, which mixed data does not give; DeepSpeed has
neither. So in each micro-step the ranks agree (one all-reduce of a few flags) on the step's visual work:
whether the tower runs, and which frame counts the packer sees. A rank whose batch lacks what the engine
needs to match encodes stand-ins (zeros, see `visual_stand_ins` in llava_arch.py) in the same call as its
own inputs, adding an exact zero to the embeddings; a rank whose batch is empty also runs the language
model on one token, for a loss of exactly zero. No sample's sequence changes: a text-only sample stays
text-only.

Cost: the all-reduce (0.4 ms median with gloo on two CPU ranks), and the stand-ins, which only repeat
work that another rank does in the same step (so they rarely lengthen it). At the seed shapes on 2 CPU
cores, against a text-only step of 2 x 128 tokens (1.3 s): a one-frame adapter stand-in is within the
noise, an 8-frame one (ZeRO-3, a frame count this batch lacks) +15%, the tower's (ZeRO-3 or a training
tower, where this batch has no pixels and another has) a clip's tower forward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..modeling.adapter_weights import ADAPTER_MODULES
from .ranks import is_distributed


def visual_work(images, max_frames: int) -> tuple[bool, set[int]]:
    """What a batch's visual inputs (the collator's `images`) make the model run: whether the tower
    runs (some input is pixels, not cached features), and the frame counts the packer sees."""
    pixels, frames = False, set()
    for item in images:
        if isinstance(item, dict):
            count = item["patch_features"].shape[0]
        else:
            pixels = True
            count = item.shape[0] if item.ndim == 4 else 1
        frames.add(min(count, max_frames))  # longer clips are sampled down to the model's frames
    return pixels, frames


def step_visual_work(pixels: bool, frames: set[int], max_frames: int, device) -> tuple[bool, set[int]]:
    """The union of every rank's visual work in this micro-step (a collective: every rank calls it)."""
    flags = torch.zeros(max_frames + 1, dtype=torch.int32, device=device)
    flags[0] = int(pixels)
    for count in frames:
        flags[count] = 1
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    flags = flags.tolist()
    return bool(flags[0]), {count for count in range(1, max_frames + 1) if flags[count]}


def uses_every_parameter(wrapped) -> bool:
    """DDP without find_unused_parameters waits for a gradient of every trainable parameter in every step."""
    return isinstance(wrapped, DistributedDataParallel) and not wrapped.find_unused_parameters


def stand_ins_for_step(model, images, device, zero3: bool = False, every_step: bool = False) -> list:
    """The stand-ins this rank encodes in this micro-step so that it runs what the step needs (none where
    its batch already does, or where the model has no vision tower). A collective: every rank calls it
    in every micro-step.

    What must match depends on the engine. Gradients alone (DDP, ZeRO-1/2) need every module that trains
    to run on every rank where it runs on one; once is enough, so a one-frame stand-in serves (the
    order in which its gradients arrive is the order a real input gives). ZeRO-3 also gathers every
    module's parameters, frozen or not, each time it runs: the tower must run where it runs anywhere, and
    the packer as many times (once per frame count). `every_step`: whatever trains runs in every step,
    even one without any visual input (DDP without find_unused_parameters)."""
    inner = model.get_model()
    tower = inner.get_vision_tower()
    if tower is None or not is_distributed():
        return []
    max_frames = model.config.mm_num_frames
    pixels, frames = visual_work(images, max_frames)
    step_pixels, step_frames = step_visual_work(pixels, frames, max_frames, device)
    adapter_trains = any(p.requires_grad for name in ADAPTER_MODULES for p in getattr(inner, name).parameters())
    tower_trains = any(p.requires_grad for p in tower.parameters())
    if every_step:
        step_frames = step_frames or ({1} if adapter_trains or tower_trains else set())
        step_pixels = step_pixels or tower_trains
    through_tower = step_pixels and not pixels and (zero3 or tower_trains)
    if zero3:
        missing = sorted(step_frames - frames)
        if through_tower and not missing:  # a new frame count would add a packer call
            missing = [min(frames)]
    else:
        missing = [1] if (step_frames and not frames and adapter_trains) or through_tower else []
    return model.visual_stand_ins(missing, through_tower=through_tower) if missing else []
