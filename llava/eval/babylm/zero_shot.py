"""`python -m llava.eval.babylm zero_shot`: the 2025 BabyLM pipeline's sentence zero-shot evaluation
(`python -m evaluation_pipeline.sentence_zero_shot.run`) with the same flags, the same scores and the same
result files, for the causal backend.

    python -m llava.eval.babylm zero_shot --model_path_or_name MODEL --backend causal --task blimp \\
        --data_path evaluation_data/fast_eval/blimp_fast --save_predictions [--revision_name chck_10M]

MODEL is a llava checkpoint of this project (its language model is scored, as `export_lm` writes it), or
any folder or name that `AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)` loads; the
tokenizer is the folder's own, used as the pipeline uses it (see causal_scoring.py). Results go where the
pipeline writes them: OUTPUT_DIR/<model folder name>/<revision or main>/zero_shot/causal/TASK/<data
folder name>/best_temperature_report.txt (and predictions.json with --save_predictions), so that its
`collate_preds` reads them. Text tasks: blimp (BLiMP and its supplement), ewok, entity_tracking, wug_adj,
wug_past, comps. Image tasks: vqa and winoground, with their pictures from `--images_path` (anything
`datasets.load_dataset(PATH, split=--image_split)` reads: a local parquet or imagefolder dataset) at batch
size 1, the model given `pixel_values` by its processor (a llava checkpoint's, or an exported folder's
own through AutoProcessor); `--image_template append_image_token` writes the tokenizer's image token
before the text, as the pipeline's templates/image_template.json does. The other backends are refused in
one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...errors import ArgumentParser, InputError, UsageError
from . import causal_scoring, progress, results
from .tasks import IMAGE_TASKS, TASKS, read_task

logger = logging.getLogger("llava.eval.babylm")

BACKENDS = ("mlm", "causal", "mntp", "enc_dec_mask", "enc_dec_prefix")
# The pipeline's evaluation_pipeline/templates/image_template.json.
IMAGE_TEMPLATES = {"append_image_token": "{image_token}{text}"}


def build_parser() -> ArgumentParser:
    """The pipeline's flags, names, defaults and choices as `sentence_zero_shot/run.py` declares them."""
    parser = ArgumentParser(prog="python -m llava.eval.babylm zero_shot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_path", required=True, type=Path, help="folder of the task's .jsonl files")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model_path_or_name", required=True, help="a llava checkpoint, or a causal LM folder/name")
    parser.add_argument("--backend", required=True, choices=BACKENDS, help="causal (the others are the pipeline's)")
    parser.add_argument("--output_dir", default="results", type=Path)
    parser.add_argument("--images_path", default=None, help="(image tasks)")
    parser.add_argument("--image_split", default=None, help="(image tasks)")
    parser.add_argument("--image_template", default=None, help="(image tasks)")
    parser.add_argument("--revision_name", default=None, help="the checkpoint's name in the results (main if none)")
    parser.add_argument("--min_temperature", default=1.0, type=float)
    parser.add_argument("--max_temperature", default=None, type=float, help="none: --min_temperature alone")
    parser.add_argument("--temperature_interval", default=0.05, type=float)
    parser.add_argument("--batch_size", default=64, type=int)
    parser.add_argument("--non_causal_batch_size", default=64, type=int, help="(the other backends)")
    parser.add_argument(
        "--full_sentence_scores", action="store_true", help="EWoK: score the whole sentence, not the target"
    )
    parser.add_argument("--save_predictions", action="store_true")
    return parser


def task_args(task: str, data_path, pictures: tuple[str, str] | None = None, batch_size: int = 64, **flags):
    """The arguments of one task for scoring a loaded model (`score`), as the command line would give them,
    checked: `pictures` is (images path, split) for the image tasks (batch size 1 then); `flags`, other
    flags by their names (`image_template="append_image_token"`, `save_predictions=True`)."""
    argv = ["--task", task, "--data_path", str(data_path), "--backend", "causal", "--model_path_or_name", "-"]
    if pictures is not None:
        argv += ["--images_path", str(pictures[0]), "--image_split", str(pictures[1])]
        batch_size = 1
    argv += ["--batch_size", str(batch_size)]
    for name, value in flags.items():
        if value is True:
            argv.append(f"--{name}")
        elif value not in (None, False):
            argv += [f"--{name}", str(value)]
    args = build_parser().parse_args(argv)
    check_args(args)
    return args


def output_path(args) -> Path:
    """Where the pipeline writes a run's results (run.py's main)."""
    revision = args.revision_name or "main"
    model = Path(args.model_path_or_name).stem
    return args.output_dir / model / revision / "zero_shot" / args.backend / args.task / args.data_path.stem


def _is_llava_checkpoint(path: str) -> bool:
    """Whether `path` is a model of this project (a llava model_type), read as every --model-path is: a
    missing or unreadable config is one line naming it."""
    from ...model.model_folder import config_file_of, read_config
    from ...modeling.families import LLAVA_TYPES

    what = "--model_path_or_name"
    return read_config(config_file_of(path, what), what).get("model_type") in LLAVA_TYPES


def for_scoring(model, tokenizer, pictures: bool):
    """(causal LM, processor) of a loaded llava model: without `pictures` its language model as the stock
    model `export_lm` writes and the tokenizer; with them, the whole model and the processor its export
    carries."""
    from ..export_lm import to_stock
    from ..export_remote import processor_for

    if pictures:
        return model, processor_for(model, tokenizer)
    return to_stock(model), tokenizer


def load_model_and_processor(path: str, revision: str | None, pictures: bool):
    """(causal LM, processor) as the pipeline loads them: a llava checkpoint through `for_scoring`, any
    other folder or name with AutoModelForCausalLM and, for pictures, AutoProcessor (else AutoTokenizer)."""
    from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

    if _is_llava_checkpoint(path):
        from ...model.builder import load_pretrained_model

        tokenizer, model, _, _ = load_pretrained_model(path, None, device="cpu")
        model, processor = for_scoring(model, tokenizer, pictures)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, revision=revision)
        auto = AutoProcessor if pictures else AutoTokenizer
        processor = auto.from_pretrained(path, padding_side="right", revision=revision, trust_remote_code=True)
    return model.eval(), checked_processor(processor, path, pictures)


def checked_processor(processor, path: str, pictures: bool):
    tokenizer = getattr(processor, "tokenizer", processor)
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"{path}: the tokenizer is not a fast one; scoring needs its offsets (return_offsets_mapping)")
    if pictures and not callable(getattr(processor, "image_processor", None)):
        raise InputError(f"{path}: its processor takes no images (export the checkpoint with its vision tower)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = tokenizer.eos_token_id
    return processor


def load_images(images_path: str, split: str | None):
    """The pictures' dataset as the pipeline opens it; one line where it cannot be read."""
    import datasets

    try:
        return datasets.load_dataset(images_path, split=split)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise InputError(f"--images_path {images_path} (split {split}): cannot be read as a dataset ({e})") from None


def check_args(args) -> None:
    if args.backend != "causal":
        raise UsageError(
            f"--backend {args.backend}: only the causal backend is scored here (this project trains causal LMs)"
        )
    if args.images_path is not None and args.task not in IMAGE_TASKS:
        raise UsageError(f"--images_path: {args.task} has no pictures (image tasks: {', '.join(IMAGE_TASKS)})")
    if args.images_path is not None and args.batch_size != 1:
        raise UsageError(
            f"--batch_size {args.batch_size}: the image tasks are scored at batch size 1 (as the pipeline)"
        )
    if args.image_template is not None and args.image_template not in IMAGE_TEMPLATES:
        raise UsageError(
            f"--image_template {args.image_template}: not one of the pipeline's ({', '.join(IMAGE_TEMPLATES)})"
        )
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: must be at least 1")
    if args.max_temperature is not None and args.temperature_interval <= 0:
        raise UsageError(f"--temperature_interval {args.temperature_interval}: must be positive for a sweep")


def read_items(args) -> list[dict]:
    """The task's items (with their pictures, where --images_path names them)."""
    images = load_images(args.images_path, args.image_split) if args.images_path is not None else None
    return read_task(args.data_path, args.task, args.full_sentence_scores, images)


def run(args) -> dict:
    """Scores the task; writes and prints what the pipeline writes and prints. Returns the best
    temperature, its average and the report's path."""
    check_args(args)
    items = read_items(args)
    model, processor = load_model_and_processor(
        args.model_path_or_name, args.revision_name, args.images_path is not None
    )
    return score(args, items, model, processor, output_path(args))


def score(args, items: list[dict], model, processor, out: Path, quiet: bool = False, device=None) -> dict:
    """Scores `items` with a loaded model and processor (on `device`: by default the GPU where there is
    one); writes the pipeline's files to `out`."""
    from tqdm import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    temperatures = causal_scoring.temperatures(args.min_temperature, args.max_temperature, args.temperature_interval)
    tally = results.Tally(args.task, temperatures)
    template = IMAGE_TEMPLATES.get(args.image_template) if args.images_path is not None else None
    done = progress.Progress(out, "scores", progress_inputs(args, items))
    starts = range(0, len(items), args.batch_size)
    for number, start in enumerate(tqdm(starts, desc=f"{args.task} {args.data_path.stem}", disable=quiet)):
        batch = items[start : start + args.batch_size]
        if number not in done:
            candidates = causal_scoring.encode_batch(processor, batch, template)
            scores = causal_scoring.score_candidates(model, candidates, temperatures, device)
            done.add(number, [scores[t].tolist() for t in temperatures])
        tally.add(batch, {t: torch.tensor(s) for t, s in zip(temperatures, done[number])})
    best, average, text = results.write(out, args.task, tally, args.save_predictions)
    done.finish()
    if not quiet:
        for t, value in average.items():
            print(f"{t}\t{value:.2f}")
        print()
        print(text, end="")
    return {"temperature": best, "average": average[best], "report": str(out / "best_temperature_report.txt")}


def progress_inputs(args, items: list[dict]) -> list[str]:
    """What a task's scores depend on, for its progress file: the model, the items' text and the flags
    that change a score or its order."""
    import json

    text = json.dumps([{k: v for k, v in item.items() if k != "image"} for item in items], default=str)
    flags = {k: str(v) for k, v in vars(args).items() if k not in ("output_dir", "save_predictions")}
    return [args.model_path_or_name, text, json.dumps(flags, sort_keys=True)]


def main(argv: list[str] | None = None) -> dict:
    return run(build_parser().parse_args(argv))
