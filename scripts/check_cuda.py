#!/usr/bin/env python
"""CUDA checks of the model core at the seed's shapes (run on a GPU machine; not part of the tests).

GPT-2 12x768 with a 30k vocabulary and 1,024 positions, a DINOv2-large-shaped tower with random weights
(24 layers, width 1024, 224-pixel crops -> 16x16 patches), 8 frames, fast 8x2x4 + slow 2x4x4 packer,
projector 1024 -> 2560 -> 768. Checks, each printed PASS/FAIL:
- eager and SDPA attention give the same fp32 logits on a video batch;
- a bf16 autocast training step gives a finite loss and adapter gradients, none in the frozen tower;
- generate with a clip on CUDA;
and prints the bf16 train-step time with SDPA and with eager attention, measured side by side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from copy import deepcopy

import torch

from llava import errors
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model import LlavaGPT2Config, LlavaGPT2ForCausalLM
from llava.testing import DINOV2_LARGE, save_dinov2, tiny_vision_args

RESULTS = []


def report(name, ok, detail=""):
    RESULTS.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}  {name} {detail}", flush=True)


def build(tower_dir):
    """One model, copied for each attention implementation: the comparison is then of kernels only
    (two separately built random models need not get the same weights)."""
    torch.manual_seed(0)
    config = LlavaGPT2Config(
        n_layer=12, n_embd=768, n_head=12, vocab_size=30000, n_positions=1024, bos_token_id=0, eos_token_id=0
    )
    model = LlavaGPT2ForCausalLM(config)
    model.get_model().initialize_vision_modules(
        tiny_vision_args(tower_dir, mm_projector_hidden_size=2560, mm_packer_num_heads=8)
    )
    copies = {}
    for attn in ("eager", "sdpa"):
        copy = deepcopy(model)
        copy.set_attn_implementation(attn)
        copies[attn] = copy.cuda()
    return copies["eager"], copies["sdpa"]


def batch(batch_size=4, text=48):
    ids = torch.randint(3, 30000, (batch_size, text))
    ids[:, 0] = IMAGE_TOKEN_INDEX
    labels = ids.masked_fill(ids == IMAGE_TOKEN_INDEX, IGNORE_INDEX)
    clips = [torch.randn(8, 3, 224, 224) for _ in range(batch_size)]
    return ids.cuda(), labels.cuda(), [c.cuda() for c in clips]


def step_time(model, ids, labels, clips, steps=10):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    for i in range(steps + 3):
        if i == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels, images=clips).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    parser = errors.ArgumentParser(
        prog="python scripts/check_cuda.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args(argv)
    if not torch.cuda.is_available():
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise errors.UserError(f"no CUDA device: these checks need a GPU (torch {torch.__version__}, {build})")
    print(torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    with tempfile.TemporaryDirectory() as tower_dir:
        save_dinov2(tower_dir, DINOV2_LARGE)  # facebook/dinov2-large's shape and processor, random weights
        eager, sdpa = build(tower_dir)

    ids, labels, clips = batch()
    # fp32 comparison without TF32, so that only the attention kernels differ
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        text = ids[:, 1:]
        a, b = eager(input_ids=text).logits, sdpa(input_ids=text).logits
        report(
            "eager == sdpa, text only (fp32 logits)",
            (a - b).abs().max().item() < 1e-3,
            f"max diff {(a - b).abs().max().item():.2e}, logit scale {a.abs().max().item():.2e}",
        )
        fa, fb = eager.encode_videos(clips), sdpa.encode_videos(clips)
        feature_diff = max((x - y).abs().max().item() for x, y in zip(fa, fb))
        report("visual tokens equal", feature_diff < 1e-4, f"max diff {feature_diff:.2e}")
        a, b = eager(input_ids=ids, images=clips).logits, sdpa(input_ids=ids, images=clips).logits
        report(
            "eager == sdpa, video (fp32 logits)",
            (a - b).abs().max().item() < 1e-3,
            f"max diff {(a - b).abs().max().item():.2e}, logit scale {a.abs().max().item():.2e}",
        )
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    sdpa.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = sdpa(input_ids=ids, labels=labels, images=clips)
    out.loss.backward()
    inner = sdpa.get_model()
    adapter_ok = all(
        p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        for m in (inner.mm_projector, inner.vision_resampler, inner.mm_pos_embed)
        for p in m.parameters()
    )
    tower_ok = all(p.grad is None for p in inner.vision_tower.parameters())
    report("bf16 train step", bool(torch.isfinite(out.loss)) and adapter_ok and tower_ok, f"loss {out.loss.item():.3f}")
    sdpa.zero_grad(set_to_none=True)

    sdpa.eval()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        tokens = sdpa.generate(ids[:1, :8], images=clips[:1], max_new_tokens=8, min_new_tokens=8, do_sample=False)
    report("generate with a clip", tokens.shape == (1, 8), str(tuple(tokens.shape)))

    sdpa.train()
    eager.train()
    t_sdpa, t_eager = step_time(sdpa, ids, labels, clips), step_time(eager, ids, labels, clips)
    print(
        f"bf16 train step, batch 4 x 8 frames: sdpa {t_sdpa * 1e3:.1f} ms, eager {t_eager * 1e3:.1f} ms, "
        f"ratio eager/sdpa {t_eager / t_sdpa:.2f}",
        flush=True,
    )
    print(f"{sum(RESULTS)}/{len(RESULTS)} checks passed", flush=True)
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(errors.entry_point(main)())
