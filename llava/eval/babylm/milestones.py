"""The BabyLM tasks `llava.eval.curves --babylm` scores at each milestone: the specs read once before any
model loads, and a checkpoint's rows, each task scored as its command (zero_shot, reading, devbench) scores
it alone, the pipeline's files written under OUTPUT_DIR/babylm_results/<run>/<revision>/."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ...errors import UsageError
from .tasks import IMAGE_TASKS

logger = logging.getLogger("llava.eval.curves")

BABYLM_RESULTS = "babylm_results"
# BabyLM tasks the pipeline runs with commands of their own (llava.eval.babylm reading, devbench).
SEPARATE_TASKS = ("reading", "devbench")


def babylm_tasks(args) -> list:
    """Each --babylm SPEC as the zero-shot scorer's arguments, with its items read once (one line for a
    malformed spec, a folder in the wrong format or a missing picture)."""
    import argparse

    from . import devbench, reading, zero_shot

    tasks = []
    for spec in args.babylm or []:
        task, _, paths = spec.partition("=")
        parts = paths.split(",")
        if not paths or len(parts) not in (1, 3):
            raise UsageError(f"--babylm {spec}: expected TASK=DATA_PATH or TASK=DATA_PATH,IMAGES_PATH,SPLIT")
        if task in SEPARATE_TASKS:  # the pipeline's reading and DevBench commands: data only
            if len(parts) != 1:
                raise UsageError(f"--babylm {spec}: {task} takes its data alone ({task}=DATA_PATH)")
            nothing = dict(images_path=None, image_split=None, image_template=None, model_path_or_name="-")
            task_args = argparse.Namespace(task=task, data_path=Path(parts[0]), backend="causal", **nothing)
            if task == "reading":
                tasks.append((task_args, reading.read_rows(task_args.data_path)))
            else:
                devbench.check_data(task_args.data_path)
                tasks.append((task_args, None))
            continue
        pictures = (parts[1], parts[2]) if len(parts) == 3 else None
        template = args.babylm_image_template if pictures else None
        task_args = zero_shot.task_args(
            task, parts[0], pictures, args.batch_size, image_template=template, save_predictions=True
        )
        tasks.append((task_args, zero_shot.read_items(task_args)))
    return tasks


def babylm_rows(model, tokenizer, checkpoint, args) -> list[dict]:
    """Each BabyLM task scored as the pipeline scores it, its files written where collate_preds reads them.
    A model without a vision tower (the text condition) scores the image tasks on their text alone, as the
    pipeline scores a text-only model (no --images_path): the row says `pictures: false`."""
    import argparse

    from . import zero_shot
    from .export import revision_name

    sees = model.get_vision_tower() is not None
    results = Path(args.output_dir) / BABYLM_RESULTS / Path(os.path.abspath(args.output_dir)).name
    rows, scorers = [], {}

    def scorer(pictures: bool):
        """(model, processor) as the tasks score them, made once per checkpoint (the text one copies the LM)."""
        if pictures not in scorers:
            scorers[pictures] = zero_shot.for_scoring(model, tokenizer, pictures)
        return scorers[pictures]

    for task_args, items in args.babylm_tasks:
        # The checkpoint's folder in the arguments: a stopped evaluation goes on only for the same model.
        task_args = argparse.Namespace(**{**vars(task_args), "model_path_or_name": str(checkpoint.path)})
        if task_args.task in SEPARATE_TASKS:
            rows += separate_task_rows(model, scorer, task_args, items, results / revision_name(checkpoint.name))
            continue
        pictures = task_args.images_path is not None and sees
        if task_args.images_path is not None and not sees:
            task_args = argparse.Namespace(**{**vars(task_args), "images_path": None, "image_split": None})
            items = [{k: v for k, v in item.items() if k != "image"} for item in items]
        scored, processor = scorer(pictures)
        processor = zero_shot.checked_processor(processor, checkpoint.path, pictures)
        out = results / revision_name(checkpoint.name) / "zero_shot" / "causal" / task_args.task
        result = zero_shot.score(
            task_args, items, scored, processor, out / task_args.data_path.stem, quiet=True, device=model.device
        )
        row = {"measure": f"babylm:{task_args.task}:{task_args.data_path.stem}", "group": None}
        row |= {"value": result["average"], "n": len(items)}
        if task_args.task in IMAGE_TASKS:
            row["pictures"] = pictures
        rows.append(row)
    return rows


def separate_task_rows(model, scorer, task_args, items, revision_folder: Path) -> list[dict]:
    """The reading task's two scores, or DevBench's three (accuracies in percent), its files written
    where the pipeline writes them. A model without a vision tower has no DevBench scores (its pictures
    are the task), as the pipeline runs DevBench on multimodal models only."""
    import argparse

    from . import devbench, reading

    if task_args.task == "reading":
        stock, tokenizer = scorer(False)
        out = revision_folder / "zero_shot" / "causal" / "reading"
        result = reading.score(task_args, items.copy(), stock, tokenizer, out, quiet=True, device=model.device)
        return [
            {"measure": f"babylm:reading:{name}", "group": None, "value": result[name], "n": len(items)}
            for name in reading.SCORES.values()
        ]
    if model.get_vision_tower() is None:
        logger.info("devbench: left out for a model without a vision tower")
        return []
    scored, processor = scorer(True)
    dev_args = argparse.Namespace(
        **vars(task_args), model=task_args.model_path_or_name, revision=None, model_type="git"
    )
    result = devbench.score(dev_args, scored, processor, revision_folder / "zero_shot" / "devbench", True, model.device)
    scale = {"lex-viz_vocab": 100.0, "gram-trog": 100.0, devbench.THINGS: 1.0}
    return [
        {"measure": f"babylm:devbench:{name}", "group": None, "value": result[name] * factor, "n": None}
        for name, factor in scale.items()
    ]
