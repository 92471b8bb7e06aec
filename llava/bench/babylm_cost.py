"""What the BabyLM pipeline's tasks cost per checkpoint at the seed's shapes:
`python -m llava.bench.babylm_cost [--items N] [--image-items N]`.

Scores tasks with `llava.eval.babylm zero_shot`'s scorer (the pipeline's batch size 64 for text, 1 with
pictures) on the seed's model: GPT-2 12x768 with a 30,000-word head, and for the image tasks the whole
multimodal model with a DINOv2-large-shaped tower (random weights: the cost does not depend on them). The
items are the demo's Italian sentences in the pipeline's formats, at the lengths of its tasks: BLiMP pairs
of one sentence, EWoK pairs of a context and a target, entity-tracking items of a six-sentence story and
five options; Winoground items of a picture and two captions, VQA items of a picture, a question and
eight answers. Each kind is timed on --items (--image-items) items after one unmeasured batch, and
multiplied by the number of items of that kind in the pipeline's fast set (text; its collate_preds
sizes) and full set (pictures): seconds per checkpoint on this machine, the arithmetic shown. The real
sets cannot be downloaded here, so the token counts are those of these sentences, not of the real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch

from .report import write_section

# Items per kind in the pipeline's evaluation sets (evaluation_pipeline/collate_preds.py's sizes: BLiMP's
# fast set is 200 pairs for each of its 67 UIDs and the supplement's 50 for each of 5; EWoK's 100 for each
# of 11 domains; entity tracking's regular splits; wug_adj 200 and wug_past 50, counted as pairs).
FAST_SET = {
    "blimp": 67 * 200 + 5 * 50 + 200 + 50,
    "ewok": 11 * 100,
    "entity_tracking": 606 + 607 + 606 + 606 + 568 + 159,
}
LABELS = {"blimp": "blimp + supplement + wug (as pairs)"}
FULL_SET_PICTURES = {"winoground": 746, "vqa": 25230}


def _records(kind: str, n: int, rng: random.Random) -> list[dict]:
    from ..demo import grammar

    subjects = grammar.all_subjects()

    def caption():
        return grammar.caption(rng.choice(subjects), rng.randrange(len(grammar.TEMPLATES)))

    if kind == "blimp":
        return [{"sentence_good": caption(), "sentence_bad": caption()} for _ in range(n)]
    if kind == "ewok":
        return [
            {"Domain": "d", "Context1": caption(), "Context2": caption(), "Target1": caption(), "Target2": caption(),
             "ContextType": "t", "ContextDiff": "c", "TargetDiff": "c"}
            for _ in range(n)
        ]  # fmt: skip
    if kind == "entity_tracking":
        story = lambda: ". ".join(caption() for _ in range(6)) + ". "  # noqa: E731
        return [{"input_prefix": story(), "options": [caption() for _ in range(5)], "numops": 0} for _ in range(n)]
    if kind == "winoground":
        return [
            {"caption_0": caption(), "caption_1": caption(), "image_idx": i % 4, "image_key": "image",
             "collapsed_tag": "o", "tag": "t", "secondary_tag": "s"}
            for i in range(n)
        ]  # fmt: skip
    return [
        {"question": "la forma è", "target_ans": "cerchio", "distractors": list(grammar.NOUNS)[1:] + ["rosso"] * 3,
         "idx_in_hf_dataset": i % 4}
        for i in range(n)
    ]  # fmt: skip


def measure(kind: str, n: int, model, processor, folder: Path, pictures: Path | None) -> float:
    """Seconds per item of `kind`, scoring n items after one unmeasured pass over a few."""
    from ..eval.babylm import zero_shot

    data = folder / kind
    data.mkdir(parents=True, exist_ok=True)
    name = "regular.jsonl" if kind == "entity_tracking" else f"{kind}.jsonl"
    rng = random.Random(0)
    (data / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _records(kind, n, rng)))
    args = zero_shot.task_args(kind, data, None if pictures is None else (pictures, "train"))
    items = zero_shot.read_items(args)
    zero_shot.score(args, items[: min(4, n)], model, processor, folder / "out", quiet=True, device="cpu")
    start = time.perf_counter()
    zero_shot.score(args, items, model, processor, folder / "out", quiet=True, device="cpu")
    return (time.perf_counter() - start) / n


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m llava.bench.babylm_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=128, help="items timed per text task")
    parser.add_argument("--image-items", type=int, default=4, help="items timed per image task")
    parser.add_argument("--workdir", default="bench_work", help="where the seed's models are built (reused)")
    parser.add_argument("--output", default="docs/benchmarks.md", help="the file whose cost section it rewrites")
    args = parser.parse_args(argv)

    from PIL import Image
    from transformers import AutoTokenizer

    from ..demo.babylm_data import write_pictures
    from ..eval.babylm import zero_shot
    from ..model.builder import causal_lm_class
    from ..modeling.vision_settings import VisionSettings
    from .assets import build_assets
    from .configs import SHAPES

    torch.set_grad_enabled(False)
    assets = build_assets(SHAPES["seed"], Path(args.workdir))
    model = causal_lm_class("llava_gpt2").from_pretrained(assets["gpt2"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(assets["gpt2"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        text_model, text_processor = zero_shot.for_scoring(model, tokenizer, pictures=False)
        text_processor = zero_shot.checked_processor(text_processor, assets["gpt2"], False)
        for kind, size in FAST_SET.items():
            seconds = measure(kind, args.items, text_model.eval(), text_processor, folder, None)
            rows.append({"task": kind, "set": "fast", "items": size, "s_per_item": seconds})
        model.get_model().initialize_vision_modules(VisionSettings(vision_tower=assets["tower"]))
        model.eval()
        pictures = folder / "pictures"
        write_pictures(pictures, [Image.fromarray((torch.rand(360, 640, 3) * 255).byte().numpy()) for _ in range(4)])
        image_model, image_processor = zero_shot.for_scoring(model, tokenizer, pictures=True)
        image_processor = zero_shot.checked_processor(image_processor, assets["gpt2"], True)
        for kind, size in FULL_SET_PICTURES.items():
            seconds = measure(kind, args.image_items, image_model, image_processor, folder, pictures)
            rows.append({"task": kind, "set": "full", "items": size, "s_per_item": seconds})
    body = report(rows, args, machine_line())
    print(body)
    if args.output:
        write_section(Path(args.output), SECTION, body)
    return rows


SECTION = "## BabyLM evaluation cost"


def machine_line() -> str:
    import datetime
    import platform

    return (
        f"Measured {datetime.date.today().isoformat()} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), CPU only (float32)."
    )


def report(rows: list[dict], args, machine: str) -> str:
    lines = [
        "`python -m llava.bench.babylm_cost`: seconds per checkpoint of the BabyLM 2025 pipeline's tasks,",
        "scored as `llava.eval.babylm zero_shot` scores them, at the seed's shapes (GPT-2 12x768 with a",
        "30,000-word head; for the image tasks the whole model with a DINOv2-large-shaped tower); each kind",
        "of item timed on the demo's Italian sentences in the task's format, times the number of such items in",
        "the pipeline's fast set (text) or full set (pictures). The real sets cannot be downloaded here: their",
        "sentences are not these, so the token counts differ.",
        machine,
        "",
        f"| task | set | items | s per item (timed on {args.items} text / {args.image_items} image items) "
        "| s per checkpoint |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        total = r["items"] * r["s_per_item"]
        lines.append(
            f"| {LABELS.get(r['task'], r['task'])} | {r['set']} | {r['items']:,} | {r['s_per_item']:.4f} "
            f"| {r['items']:,} x {r['s_per_item']:.4f} = {total:,.0f} |"
        )
    text_total = sum(r["items"] * r["s_per_item"] for r in rows if r["set"] == "fast")
    lines += ["", f"The fast set's text tasks: {text_total:,.0f} s ({text_total / 60:.1f} min) per checkpoint."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
