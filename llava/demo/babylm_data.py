"""The demo's BabyLM tasks, in Italian, in the 2025 BabyLM pipeline's formats (what `llava.eval.babylm
zero_shot` and `llava.eval.curves --babylm` read), about what the demo's clips show:

- `blimp_it/`: the grammar's minimal pairs, a file per paradigm (the BLiMP supplement's form: the file
  names the UID);
- `ewok_it/`: EWoK's context/target pairs: a caption as the context, and as targets another caption of
  the same clip and one that contradicts it in one attribute (its direction, or its colour);
- `winoground_it/`: a picture and two captions, the true one and the same words with another colour or
  shape;
- `vqa_it/`: a picture, a question about its colour or its shape, the answer and 7 distractors.

Both image tasks name rows of `pictures/` (a parquet dataset, split `train`).

The frames are middle frames of new renderings of the clips' attribute space: pictures the models never
saw, of things they saw moving.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from . import grammar
from .synthetic import render_frames

DIRECTION_OPPOSITES = {"destra": "sinistra", "sinistra": "destra", "alto": "basso", "basso": "alto"}
CAPTION_TEMPLATE, TARGET_TEMPLATE = 0, 4  # "un cerchio rosso si muove verso destra", "il video mostra ..."


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def write_pictures(folder: Path, pictures: list) -> str:
    """`pictures` (PIL images) as a parquet dataset of one `image` column, split `train`, which
    `datasets.load_dataset(folder, split="train")` reads as the pipeline does; returns the folder."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_dict({"image": pictures}).cast_column("image", datasets.Image())
    table.to_parquet(str(folder / "train.parquet"))
    return str(folder)


def _pictures(folder: Path, subjects: list[grammar.Subject], seed: int) -> None:
    """Each subject's middle frame, a row each (write_pictures)."""
    from PIL import Image

    from .synthetic import ClipSpec

    rng = random.Random(seed)
    frames = []
    for s in subjects:
        clip = render_frames(ClipSpec(s.colour, s.shape, s.direction, s.count), seed=rng.randrange(2**31))
        frames.append(Image.fromarray(clip[len(clip) // 2]))
    write_pictures(folder, frames)


def _other(values, value, rng):
    return rng.choice([v for v in values if v != value])


def write_babylm_tasks(folder, items: int = 48, seed: int = 0) -> dict[str, str]:
    """Writes the four task folders (and the two picture datasets) under `folder`; returns each task's
    `--babylm` spec for llava.eval.curves (`TASK=DATA_PATH`, or `TASK=DATA_PATH,IMAGES_PATH,SPLIT`)."""
    folder = Path(folder)
    rng = random.Random(seed)
    subjects = grammar.all_subjects()

    by_uid: dict[str, list[dict]] = {}
    for row in grammar.minimal_pairs(per_paradigm=items, seed=seed):
        by_uid.setdefault(row["UID"], []).append(
            {"sentence_good": row["sentence_good"], "sentence_bad": row["sentence_bad"]}
        )
    for uid, rows in by_uid.items():
        _write_jsonl(folder / "blimp_it" / f"{uid}.jsonl", rows)

    ewok = []
    for _ in range(items):
        s = rng.choice(subjects)
        for domain, changed in (
            ("movimento", grammar.Subject(s.shape, s.colour, DIRECTION_OPPOSITES[s.direction], s.count)),
            ("colore", grammar.Subject(s.shape, _other(grammar.COLOUR_WORDS, s.colour, rng), s.direction, s.count)),
        ):
            ewok.append(
                {
                    "Domain": domain,
                    "Context1": grammar.caption(s, CAPTION_TEMPLATE),
                    "Context2": grammar.caption(changed, CAPTION_TEMPLATE),
                    "Target1": grammar.caption(s, TARGET_TEMPLATE),
                    "Target2": grammar.caption(changed, TARGET_TEMPLATE),
                    "ContextType": "didascalia",
                    "ContextDiff": domain,
                    "TargetDiff": domain,
                }
            )
    _write_jsonl(folder / "ewok_it" / "ewok.jsonl", ewok)

    pictured = [rng.choice(subjects) for _ in range(items)]
    _pictures(folder / "pictures", pictured, seed)
    winoground, vqa = [], []
    for row, s in enumerate(pictured):
        if row % 2 == 0:
            tag, other = (
                "colore",
                grammar.Subject(s.shape, _other(grammar.COLOUR_WORDS, s.colour, rng), s.direction, s.count),
            )
        else:
            tag, other = (
                "forma",
                grammar.Subject(_other(list(grammar.NOUNS), s.shape, rng), s.colour, s.direction, s.count),
            )
        template = rng.randrange(len(grammar.TEMPLATES))
        winoground.append(
            {
                "caption_0": grammar.caption(s, template),
                "caption_1": grammar.caption(other, template),
                "image_idx": row,
                "image_key": "image",
                "collapsed_tag": "Object",
                "tag": tag,
                "secondary_tag": "parola",
            }
        )
        colours, shapes = list(grammar.COLOUR_WORDS), list(grammar.NOUNS)
        if row % 2 == 0:
            question, answer = "il colore è", s.colour
            distractors = [c for c in colours if c != answer] + rng.sample(shapes, 4)
        else:
            question, answer = "la forma è", s.shape
            distractors = [n for n in shapes if n != answer] + rng.sample(colours, 3)
        vqa.append({"question": question, "target_ans": answer, "distractors": distractors, "idx_in_hf_dataset": row})
    _write_jsonl(folder / "winoground_it" / "winoground.jsonl", winoground)
    _write_jsonl(folder / "vqa_it" / "vqa.jsonl", vqa)
    pictures = f"{folder / 'pictures'},train"
    return {
        "blimp": f"blimp={folder / 'blimp_it'}",
        "ewok": f"ewok={folder / 'ewok_it'}",
        "winoground": f"winoground={folder / 'winoground_it'},{pictures}",
        "vqa": f"vqa={folder / 'vqa_it'},{pictures}",
    }
