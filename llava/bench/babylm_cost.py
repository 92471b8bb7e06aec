"""What the BabyLM pipeline's tasks cost per checkpoint at the seed's shapes:
`python -m llava.bench.babylm_cost [--items N] [--image-items N]`.

Scores tasks with `llava.eval.babylm zero_shot`'s scorer (the pipeline's batch size 64 for text, 1 with
pictures), `reading`'s (a row: the word's and the previous word's surprisal) and `devbench`'s (a picture and
a word; THINGS pictures 16 a batch) on the seed's model: GPT-2 12x768 with a 30,000-word head, and for the image tasks the whole
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
LABELS = {
    "blimp": "blimp + supplement + wug (as pairs)",
    "reading": "reading (rows: word and previous word)",
    "devbench_pairs": "devbench lex-viz_vocab + gram-trog (picture-word pairs)",
    "devbench_things": "devbench sem-things (pictures, 16 a batch)",
}
FULL_SET_PICTURES = {"winoground": 746, "vqa": 25230}
REVISIONS = 29  # chck_1M ... chck_10M, chck_20M ... chck_100M, chck_200M ... chck_1000M, and main
READING_ROWS = 1726  # collate_preds' READING_SIZE: the same set for the fast and full evaluations
# DevBench's full set (collate_preds' shapes): 119 vocabulary and 76 TROG trials of four pictures, 1,854 THINGS.
DEVBENCH_PAIRS, DEVBENCH_THINGS = (119 + 76) * 4, 1854


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


def measure_reading(n: int, model, tokenizer, folder: Path) -> float:
    """Seconds per reading row (the word's and the previous word's surprisal, then the regressions), on n
    rows of the demo's sentences with random reading measures, after one unmeasured pass over a few."""
    import pandas as pd

    from ..demo import grammar
    from ..eval.babylm import reading

    rng = random.Random(0)
    subjects = grammar.all_subjects()
    rows = []
    for _ in range(n):
        words = grammar.caption(rng.choice(subjects), rng.randrange(len(grammar.TEMPLATES))).split()
        cut = rng.randrange(2, len(words))
        row = {"item": " ".join(words[:cut]), "word": " " + words[cut], "prev_item": " ".join(words[: cut - 1])}
        row |= {"prev_word": " " + words[cut - 1], "prev_length": len(words[cut - 1]), "length": len(words[cut])}
        row |= {m: rng.gauss(200, 30) for m in reading.MEASURES}
        rows.append(row | {"Subtlex_log10": rng.gauss(3, 1), "context_length": cut})
    data = folder / "reading.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    args = reading.build_parser().parse_args(
        ["--data_path", str(data), "--model_path_or_name", "-", "--backend", "causal"]
    )
    frame = reading.read_rows(data)
    reading.score(args, frame.head(40).copy(), model, tokenizer, folder / "reading_warm", quiet=True, device="cpu")
    start = time.perf_counter()
    reading.score(args, frame, model, tokenizer, folder / "reading_out", quiet=True, device="cpu")
    return (time.perf_counter() - start) / n


def measure_devbench(trials: int, model, processor) -> tuple[float, float]:
    """(seconds per picture-word pair, seconds per THINGS picture): `trials` trials of four pictures and
    one batch of 16, after one unmeasured pair."""
    from PIL import Image

    from ..eval.babylm import devbench

    pictures = [Image.fromarray((torch.rand(300, 400, 3) * 255).byte().numpy()) for _ in range(16)]
    devbench.caption_scores(model, processor, {"images": pictures[:1], "text": ["palla"]}, "", "cpu")
    start = time.perf_counter()
    for t in range(trials):
        devbench.caption_scores(model, processor, {"images": pictures[4 * t : 4 * t + 4], "text": ["palla"]}, "", "cpu")
    pair = (time.perf_counter() - start) / (4 * trials)
    start = time.perf_counter()
    devbench.picture_features(model, processor, pictures, "", "cpu")
    return pair, (time.perf_counter() - start) / len(pictures)


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
        seconds = measure_reading(args.items, text_model.eval(), text_processor, folder)
        rows.append({"task": "reading", "set": "fast", "items": READING_ROWS, "s_per_item": seconds})
        model.get_model().initialize_vision_modules(VisionSettings(vision_tower=assets["tower"]))
        model.eval()
        pictures = folder / "pictures"
        write_pictures(pictures, [Image.fromarray((torch.rand(360, 640, 3) * 255).byte().numpy()) for _ in range(4)])
        image_model, image_processor = zero_shot.for_scoring(model, tokenizer, pictures=True)
        image_processor = zero_shot.checked_processor(image_processor, assets["gpt2"], True)
        for kind, size in FULL_SET_PICTURES.items():
            seconds = measure(kind, args.image_items, image_model, image_processor, folder, pictures)
            rows.append({"task": kind, "set": "full", "items": size, "s_per_item": seconds})
        pair, picture = measure_devbench(args.image_items, image_model, image_processor)
        rows.append({"task": "devbench_pairs", "set": "full", "items": DEVBENCH_PAIRS, "s_per_item": pair})
        rows.append({"task": "devbench_things", "set": "full", "items": DEVBENCH_THINGS, "s_per_item": picture})
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
        "scored as `llava.eval.babylm zero_shot`, `reading` and `devbench` score them, at the seed's shapes",
        "(GPT-2 12x768 with a 30,000-word head; for the image tasks the whole model with a DINOv2-large-shaped",
        "tower); each kind of item timed on the demo's Italian sentences in the task's format (random",
        "pictures), times the number of such items in the pipeline's fast set (text) or full set (pictures).",
        "The real sets cannot be downloaded here: their sentences are not these, so the token counts differ.",
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
    devbench = sum(r["items"] * r["s_per_item"] for r in rows if r["task"].startswith("devbench"))
    if devbench:
        lines.append(f"DevBench's three tasks: {devbench:,.0f} s ({devbench / 60:.1f} min) per checkpoint.")
    lines += [
        "",
        f"A run to 1B words has {REVISIONS} revisions (28 milestones and the final model): the fast set's text",
        f"tasks cost {REVISIONS * text_total / 3600:.0f} hours of this machine per run, which",
        "`evaluate_milestones.sh` spreads over a job array. The image tasks run the tower once per candidate",
        "sentence, as the pipeline calls the model (Winoground 2, VQA 8 per item), DevBench once per picture",
        "and word: on a CPU VQA's full set alone is hours per checkpoint; they are a GPU's tasks.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
