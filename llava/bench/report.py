"""What the benchmark reports around its rows: the machine line, the load around the run, and the
Markdown table (docs/benchmarks.md when run from a checkout's root)."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

from .. import errors
from .configs import SHAPES, describe_shapes
from .generation_speed import NEW_TOKENS, SINGLE_RUN_ABOVE_S


def describe_machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)} (bf16 autocast)"
    else:
        text += ", CPU only (float32)"
    return text


def describe_load(start: tuple[float, float, float], end: tuple[float, float, float]) -> str:
    """The machine's load around the run. The run itself keeps about its torch threads busy, so other work
    shows as a load at the start (before the run's own) or clearly above the run's threads at the end."""
    cores, threads = os.cpu_count(), torch.get_num_threads()
    text = (
        f"Load average (1 min) {start[0]:.1f} when the run began and {end[0]:.1f} when it ended, on "
        f"{cores} cores (this run alone keeps about {threads} busy)."
    )
    if start[0] >= 1.0 or end[0] > threads + 1:
        text += f" Other work shared this {cores}-core machine during the run: its absolute times are inflated."
    return text


def write_markdown(path: Path, machine: str, results: dict[str, list[tuple[str, str]]], argv: str, load: str) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"`python -m llava.bench {argv}`".replace(" `", "`"),  # the command, as it was run
        "",
        f"Measured {datetime.date.today().isoformat()} on: {machine}.",
        load,
        "Absolute times depend on what else the machine runs meanwhile (a shared machine inflates them, and",
        "many small operations, such as decode steps, suffer most); every ratio comes from measurements",
        "taken side by side in this one run, and the ratios are the figures to compare.",
        "Timings are medians of interleaved repetitions. 'vs tower + LM' sets two parts timed alone against",
        "one whole step, so it moves by a few percent with the machine's noise (it can read below 1); the",
        "core's own time (cached step minus the LM alone) is the steadier measure of what the multimodal",
        "core adds.",
        "",
        "The bound is the language model's own training step (forward, backward, fused AdamW) on text as long",
        "as the spliced sequence, with the same loss positions: no visual path makes a step cheaper than that,",
        "so the online step over it is the most the feature cache can gain, and a cached step or epoch is",
        "reported as a share of it (the cached and language-model steps timed as a pair of their own, apart",
        "from the online step, whose gigabytes of activations would precede one of them). The core's floor is the cached forward+backward's FLOPs over the language",
        "model's (torch's FLOP counter): what the packer, projector and splicing add if they ran at the",
        "language model's own FLOP rate. The data loader alone runs at the recipe's batch and workers, its",
        "workers kept across epochs as training keeps them, with the step replaced by nothing; GiB/s counts",
        "the visual tensors delivered (cache entries, or pixels). The H100 row is arithmetic, not a measurement:",
        "the cached step's FLOPs per clip over the GPU's dense bf16 peak at the stated share of it.",
        "",
        "Generation is greedy decoding through the model's own `generate(input_ids, attention_mask=...,",
        f"images=[clip, ...], max_new_tokens={NEW_TOKENS}, do_sample=False, eos_token_id=None)`, the call evaluation",
        f"clients make: `eos_token_id=None` turns EOS stopping off, so every call writes {NEW_TOKENS} new tokens; the",
        "KV cache is on (transformers' default). The time shares are parts timed alone, beside the whole call:",
        "the tower on the call's frames; the packer, projector and splicing (from cached tower features of the",
        "same clips); the prefill (the language model's `generate` of one token from the spliced prompt: its",
        f"forward over the prompt, with `generate`'s set-up); the decode steps (its `generate` of {NEW_TOKENS}",
        f"tokens minus that of one: {NEW_TOKENS - 1} cached steps). 'The parts add up to' says how much of the call",
        "they account for; far from 100% means the machine's noise. The forward-only bound is one forward of",
        f"the language model over the prompt and the first {NEW_TOKENS - 1} new tokens, logits on the last",
        f"{NEW_TOKENS} positions: the arithmetic of the cached decoding done in one pass, a floor that decoding",
        "one token at a time cannot beat. 'LM decoding vs forward-only bound' is what decoding token by token",
        "costs over it; 'whole caption at the bound' is the tower, the splicing and that one forward. A",
        f"generation call that would take over {SINGLE_RUN_ABOVE_S:g} s (the seed's batch 16: 128 frames through the",
        "tower) is timed once, without a warm-up, as its row says.",
        "",
    ]
    for name, rows in results.items():
        lines += [f"## {name}", "", describe_shapes(SHAPES[name]), "", "| measure | value |", "| --- | --- |"]
        lines += [f"| {what} | {value} |" for what, value in rows]
        lines.append("")
    text = "\n".join(lines) + kept_sections(path)
    with errors.saving(str(path), "the benchmark table", needed=len(text.encode())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# Sections other benchmarks write into the same file (llava.bench.babylm_cost), kept when it is rewritten.
OTHER_SECTIONS = ("## BabyLM evaluation cost",)


def kept_sections(path: Path) -> str:
    """The file's sections that another benchmark wrote (from such a heading to the end), or ''."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    starts = [text.index(h) for h in OTHER_SECTIONS if h in text]
    return "\n" + text[min(starts) :] if starts else ""


def write_section(path: Path, heading: str, body: str) -> None:
    """Puts `heading` and `body` at the end of the file, in place of an earlier section of that heading."""
    text = path.read_text() if path.exists() else ""
    if heading in text:
        text = text[: text.index(heading)].rstrip("\n") + "\n"
    text = (text + "\n" if text else "") + heading + "\n\n" + body.rstrip("\n") + "\n"
    with errors.saving(str(path), "the benchmark table", needed=len(text.encode())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
