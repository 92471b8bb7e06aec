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
wug_past, comps. The image tasks (vqa, winoground) and the other backends are refused in one line.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...errors import ArgumentParser, InputError, UsageError
from . import causal_scoring, results
from .tasks import IMAGE_TASKS, TASKS, read_task

logger = logging.getLogger("llava.eval.babylm")

BACKENDS = ("mlm", "causal", "mntp", "enc_dec_mask", "enc_dec_prefix")


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


def load_model_and_tokenizer(path: str, revision: str | None):
    """(causal LM, tokenizer) as the pipeline loads them; a llava checkpoint's language model as the stock
    model `export_lm` writes, with the checkpoint's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _is_llava_checkpoint(path):
        from ...model.builder import load_pretrained_model
        from ..export_lm import to_stock

        _, model, _, _ = load_pretrained_model(path, None, device="cpu")
        model = to_stock(model)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, revision=revision)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="right", revision=revision, trust_remote_code=True)
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"{path}: the tokenizer is not a fast one; scoring needs its offsets (return_offsets_mapping)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer


def check_args(args) -> None:
    if args.backend != "causal":
        raise UsageError(
            f"--backend {args.backend}: only the causal backend is scored here (this project trains causal LMs)"
        )
    if args.task in IMAGE_TASKS:
        raise UsageError(f"--task {args.task}: the image tasks are not scored by this command yet (text tasks only)")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: must be at least 1")
    if args.max_temperature is not None and args.temperature_interval <= 0:
        raise UsageError(f"--temperature_interval {args.temperature_interval}: must be positive for a sweep")


def run(args) -> dict:
    """Scores the task; writes and prints what the pipeline writes and prints. Returns the best
    temperature, its average and the report's path."""
    from tqdm import tqdm

    check_args(args)
    items = read_task(args.data_path, args.task, args.full_sentence_scores)
    model, tokenizer = load_model_and_tokenizer(args.model_path_or_name, args.revision_name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    temperatures = causal_scoring.temperatures(args.min_temperature, args.max_temperature, args.temperature_interval)
    tally = results.Tally(args.task, temperatures)
    batches = causal_scoring.candidate_batches(tokenizer, items, args.batch_size)
    total = -(-len(items) // args.batch_size)
    for batch, candidates in tqdm(batches, total=total, desc=f"{args.task} {args.data_path.stem}"):
        tally.add(batch, causal_scoring.score_candidates(model, candidates, temperatures, device))
    out = output_path(args)
    best, average, text = results.write(out, args.task, tally, args.save_predictions)
    for t, score in average.items():
        print(f"{t}\t{score:.2f}")
    print()
    print(text, end="")
    return {"temperature": best, "average": average[best], "report": str(out / "best_temperature_report.txt")}


def main(argv: list[str] | None = None) -> dict:
    return run(build_parser().parse_args(argv))
