"""The captioning path of evaluation clients, timed: greedy captions through the model's own
`generate(input_ids, images=...)` for a batch of clips, beside its parts timed alone, and the forward-only
bound of its decoding."""

from __future__ import annotations

import torch

from .timing import side_by_side
from .workload import Workload

# New tokens per caption (a short caption), and the batch sizes measured.
NEW_TOKENS = 32
GENERATION_BATCHES = (1, 16)
# A generation measurement whose single call would take longer than this is timed once, without a
# warm-up (batch 1 has already warmed the code paths): at the seed's shapes a batch of 16 clips sends
# 128 frames through the DINOv2-large tower, minutes on two CPU cores.
SINGLE_RUN_ABOVE_S = 20.0


def time_generation(work: Workload, batch_size: int, repeats: int, warmup: int, report) -> float:
    """Greedy captions of NEW_TOKENS tokens for `batch_size` clips through `generate(images=...)`,
    timed side by side with its parts, each run alone: the tower on the same frames; the packer,
    projector and splicing (from the cached tower features of the same clips); the language
    model's own `generate` from the spliced prompt, for one token (the prefill: its forward over the
    prompt) and for NEW_TOKENS (the difference: the decode steps); and the forward-only bound.
    Reports the rows through `report(what, value)`, returns the seconds per call."""
    model, device, online, cached = work.model, work.device, work.datasets["online"], work.datasets["cached"]
    tokenizer, template = online.tokenizer, online.template
    samples = [i % len(online) for i in range(batch_size)]
    clips = [online[i]["pixel_values"].to(device) for i in samples]
    features = [{"patch_features": cached[i]["patch_features"].to(device)} for i in samples]
    prompts = [template.prompt_ids(online.samples[i]["conversations"], tokenizer) for i in samples]
    if len(set(map(len, prompts))) != 1:
        raise RuntimeError("generation bench: the prompts differ in length; this measurement assumes no padding")
    ids = torch.tensor(prompts, device=device)
    mask = torch.ones_like(ids)
    # EOS stopping off (eos_token_id=None): every call writes exactly NEW_TOKENS tokens.
    greedy = dict(do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=tokenizer.eos_token_id)
    tower_forward = work.tower_forward(torch.cat(clips))

    def splice():
        with torch.no_grad(), work.autocast():
            return model.prepare_inputs_labels_for_multimodal(ids, None, mask, None, None, features)

    _, _, spliced_mask, _, embeds, _ = splice()
    # The bound's input: the spliced prompt and NEW_TOKENS - 1 more tokens (the last new token is
    # never fed back); which tokens does not change the cost.
    more = torch.randint(0, model.config.vocab_size, (batch_size, NEW_TOKENS - 1), device=device)
    bound_embeds = torch.cat([embeds, model.get_input_embeddings()(more).to(embeds.dtype)], dim=1)
    bound_mask = torch.ones(bound_embeds.shape[:2], dtype=spliced_mask.dtype, device=device)

    def caption():
        with work.autocast():
            out = model.generate(ids, attention_mask=mask, images=clips, max_new_tokens=NEW_TOKENS, **greedy)
        if tuple(out.shape) != (batch_size, NEW_TOKENS):
            raise RuntimeError(
                f"generation bench: generate returned {tuple(out.shape)}, expected ({batch_size}, {NEW_TOKENS})"
            )

    def lm_generate(new_tokens: int):
        with work.autocast():
            model.generate(inputs_embeds=embeds, attention_mask=spliced_mask, max_new_tokens=new_tokens, **greedy)

    def bound():
        with torch.no_grad(), work.autocast():
            model(inputs_embeds=bound_embeds, attention_mask=bound_mask, logits_to_keep=NEW_TOKENS)

    t = side_by_side(
        {
            "caption": caption,
            "tower": tower_forward,
            "splice": splice,
            "prefill": lambda: lm_generate(1),
            "lm": lambda: lm_generate(NEW_TOKENS),
            "bound": bound,
        },
        device,
        repeats,
        warmup,
    )
    runs = ("one timed run" if repeats == 1 else f"median of {repeats} runs") + (
        ", after a warm-up" if warmup else ", no warm-up"
    )
    call, decode = t["caption"], t["lm"] - t["prefill"]
    parts = {
        "tower": t["tower"],
        "packer+projector+splicing": t["splice"],
        "prefill": t["prefill"],
        "decode steps": decode,
    }
    shares = ", ".join(f"{name} {value / call:.0%}" for name, value in parts.items())
    report(
        f"generation, batch {batch_size}",
        f"{batch_size / call:.3f} captions/s ({call:.3f} s per call, {embeds.shape[1]} prompt tokens; {runs})",
    )
    report(
        f"generation time shares, batch {batch_size}",
        f"{shares} ({decode / (NEW_TOKENS - 1) * 1e3:.1f} ms per step); the parts add up to {sum(parts.values()) / call:.0%} of the call",
    )
    at_bound = t["tower"] + t["splice"] + t["bound"]
    report(
        f"LM decoding vs forward-only bound, batch {batch_size}",
        f"{t['lm']:.3f} s vs one forward {t['bound']:.3f} s: **{t['lm'] / t['bound']:.2f}x**; "
        f"whole caption at the bound {batch_size / at_bound:.3f} captions/s",
    )
    return call
