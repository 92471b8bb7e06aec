"""Caption evaluation of a trained checkpoint: loss and perplexity, BLEU-4 and CIDEr of greedy captions,
and the grounding gap.

    python -m llava.eval.captions --model-path CKPT --data VAL.json --video-folder DIR [--out RESULT.json]

prints a table (and with `--json` the JSON on stdout); `--out` writes the JSON with every caption.

- loss: mean negative log-likelihood per caption token (nats; the answer's tokens and its EOS, as
  training labels them), summed over the whole set before dividing, so that captions weigh by their
  tokens; perplexity is exp(loss). Samples are built by the training data pipeline itself (template,
  truncation to the LM's positions, frame sampling, preprocessing). As in training, the first token
  of a text-only sample is not scored where the tokenizer adds no BOS (nothing precedes it).
- grounding gap: the loss of the same captions given another sample's clip (a derangement: no sample
  keeps its own) minus the loss with the true clips, over the samples that have a clip or image. Near 0
  means the captions do not depend on what the model sees.
- BLEU-4 (sacrebleu corpus BLEU, 0-100) and CIDEr-D (0-10, the COCO caption evaluation's number) of
  greedy captions against each sample's last answer; see llava/eval/metrics.py.

Unreadable clips are logged, listed under "skipped" and left out of every number.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys

import torch
from tqdm import tqdm

from ..constants import IGNORE_INDEX
from ..data.dataset import DataCollatorForSupervisedDataset, dataset_for_model
from ..data.templates import get_template, last_answer, trained_version
from ..errors import ArgumentParser, InputError, check_input_folder, entry_point, listing, saving
from ..generation import caption
from ..model.builder import load_pretrained_model
from .metrics import bleu4, cider

logger = logging.getLogger(__name__)


def load_items(
    model,
    tokenizer,
    image_processor,
    data_path,
    video_folder=None,
    image_folder=None,
    version="plain",
    num_frames=None,
    samples=None,
):
    """The evaluation set as dataset items (ids, labels, pixels), built by the training pipeline itself so
    that tokenization, truncation and preprocessing are exactly the ones the model was trained with.

    Returns `(dataset, items)`: unreadable media are logged and left out of `items`; the dataset's
    `skipped` attribute lists them (`{"id", "path", "reason"}`). `samples`: the data file's samples where
    the caller has read them already (load_samples).
    """
    dataset = dataset_for_model(
        model,
        tokenizer,
        image_processor,
        data_path,
        version,
        video_folder=video_folder,
        image_folder=image_folder,
        num_frames=num_frames,
        samples=samples,
    )
    items = [dataset[i] for i in range(len(dataset))]
    dataset.skipped = [{"id": i["id"], "path": i["path"], "reason": i["reason"]} for i in items if i.get("skipped")]
    for item in dataset.skipped:
        logger.warning("skipping %s (%s): %s", item["id"], item["path"], item["reason"])
    return dataset, [i for i in items if not i.get("skipped")]


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation with no fixed point: every caption gets some other sample's clip."""
    if n < 2:
        raise ValueError("shuffling clips needs at least two samples")
    rng = random.Random(seed)
    order = list(range(n))
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    return order


def with_clips_from(items, order):
    """The same items, each carrying the clip of item `order[i]`."""
    return [
        {**item, "pixel_values": items[j]["pixel_values"], "modality": items[j]["modality"]}
        for item, j in zip(items, order)
    ]


def _to(batch: dict, device) -> dict:
    return {
        k: v.to(device) if torch.is_tensor(v) else [x.to(device) for x in v] if k == "images" else v
        for k, v in batch.items()
    }


@torch.no_grad()
def caption_nll(model, tokenizer, items, batch_size: int = 16, progress: bool = False) -> list[tuple[float, int]]:
    """Per item: (summed negative log-likelihood, number of tokens) over its labelled tokens (the
    caption and its EOS under the plain template), given the item's clip, as training scores them.

    The visual block is spliced in by the model's own `prepare_inputs_labels_for_multimodal`, then each
    labelled token's log-probability is read from the logits of the position before it (in float32).
    """
    collate = DataCollatorForSupervisedDataset(tokenizer)
    device = next(model.parameters()).device
    results = []
    for start in tqdm(range(0, len(items), batch_size), desc="loss", disable=not progress, file=sys.stderr):
        chunk = items[start : start + batch_size]
        batch = collate(chunk)
        batch.pop("skipped")
        batch = _to(batch, device)
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if batch["images"]:
            _, positions, mask, _, embeds, labels = model.prepare_inputs_labels_for_multimodal(
                ids, None, mask, None, labels, batch["images"], batch["modalities"]
            )
            logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask).logits
        targets = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), targets.clamp(min=0), reduction="none"
        )
        counted = targets != IGNORE_INDEX
        sums, counts = (nll * counted).sum(1), counted.sum(1)
        results += [(float(a), int(b)) for a, b in zip(sums, counts)]
    return results


def mean_nll(pairs) -> float:
    """Token-weighted mean of (sum, count) pairs: long and short captions weigh by their tokens."""
    total, count = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    if count == 0:
        raise ValueError("no labelled tokens to score (samples without an answer?)")
    return total / count


def caption_loss(model, tokenizer, items, batch_size: int = 16, progress: bool = False) -> float:
    """Mean negative log-likelihood per caption token (EOS included) over all `items`."""
    return mean_nll(caption_nll(model, tokenizer, items, batch_size, progress))


def generate_captions(
    model,
    tokenizer,
    items,
    version="plain",
    batch_size: int = 16,
    max_new_tokens: int = 32,
    progress: bool = False,
    keep_special_tokens: bool = False,
) -> list[str]:
    """Greedy captions of dataset items (load_items), each with its own clip: the prompt is the item's
    (its conversation before the answer, as training wrote it, with the values of its coordinate
    placeholders), cut at `version`'s end of answer. `keep_special_tokens`: bin tokens stay in the text
    (grounding answers; generation.generate_texts)."""
    return caption(
        model,
        tokenizer,
        get_template(version),
        [item["prompt_ids"] for item in items],
        [i["pixel_values"] for i in items],
        batch_size=batch_size,
        progress=progress,
        coordinate_values=[prompt_values(item) for item in items],
        max_new_tokens=max_new_tokens,
        keep_special_tokens=keep_special_tokens,
    )


def prompt_values(item: dict):
    """The values of the coordinate placeholders of an item's prompt (the first len(prompt_ids) of its
    `coordinate_values`: the prompt is a prefix of input_ids), or None where it has none."""
    values = item.get("coordinate_values")
    return None if values is None else values[: len(item["prompt_ids"])]


def check_inputs(model_path, data_path, video_folder=None, image_folder=None, model_base=None) -> list[dict]:
    """Everything evaluate() reads, checked before the model is loaded (one InputError line each): the model
    folder (a llava checkpoint where the data has clips or images), the data file (training's checks, and a
    reference answer in every sample) and the media folders. Returns the data's samples."""
    from ..serve import checks

    config = checks.check_model(model_path, model_base)
    samples = checks.check_data(data_path)
    check_input_folder(video_folder, "--video-folder")
    check_input_folder(image_folder, "--image-folder")
    unanswered = [s["id"] for s in samples if last_answer(s["conversations"]) is None]
    if unanswered:
        shown = listing(map(repr, unanswered), 5, ", ")
        raise InputError(f"--data: {len(unanswered)} samples have no reference answer to score: {shown} ({data_path})")
    if checks.has_visual_samples(samples):
        checks.require_vision(config, model_path, "score the clips and images of --data")
    return samples


def evaluate(
    model_path,
    data_path,
    video_folder=None,
    image_folder=None,
    version=None,
    batch_size=16,
    max_new_tokens=32,
    device="cpu",
    seed=0,
    progress=True,
    model_base=None,
    num_frames=None,
    dtype=None,
    vision_tower=None,
) -> dict:
    """Every number of the report (see the module docstring), with each sample's caption and loss."""
    samples = check_inputs(model_path, data_path, video_folder, image_folder, model_base)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_path, model_base, device=device, dtype=dtype, vision_tower=vision_tower
    )
    result = score_model(
        model,
        tokenizer,
        image_processor,
        data_path,
        samples,
        video_folder,
        image_folder,
        version,
        batch_size,
        max_new_tokens,
        seed,
        progress,
        num_frames,
    )
    return {"model_path": model_path, "model_base": model_base, **result}


def score_model(
    model,
    tokenizer,
    image_processor,
    data_path,
    samples,
    video_folder=None,
    image_folder=None,
    version=None,
    batch_size=16,
    max_new_tokens=32,
    seed=0,
    progress=True,
    num_frames=None,
) -> dict:
    """evaluate()'s numbers for a model already loaded; `samples`: the data file's, as check_inputs returns them."""
    version = version or trained_version(model.config)
    dataset, items = load_items(
        model, tokenizer, image_processor, data_path, video_folder, image_folder, version, num_frames, samples
    )
    if not items:
        raise InputError(f"--data: no sample could be read, all {len(dataset.skipped)} were skipped ({data_path})")
    references = {s["id"]: last_answer(s["conversations"]) for s in dataset.samples}

    nll = caption_nll(model, tokenizer, items, batch_size, progress)
    loss = mean_nll(nll)
    visual = [k for k, item in enumerate(items) if item["pixel_values"] is not None]
    result = {
        "data": data_path,
        "version": version,
        "samples": len(items),
        "skipped": dataset.skipped,
        "caption_tokens": sum(c for _, c in nll),
        "loss": loss,
        "perplexity": math.exp(loss),
        "visual_samples": len(visual),
        "loss_true_clips": None,
        "loss_shuffled_clips": None,
        "grounding_gap": None,
    }
    per_sample = [{"id": i["id"], "loss": s / max(c, 1)} for i, (s, c) in zip(items, nll)]

    # Grounding gap: the same captions scored with another sample's clip. Over the samples that have a
    # clip or image (text-only samples would score the same either way); a positive gap means the
    # captions depend on what the model sees.
    if len(visual) >= 2:  # (samples with media were refused above for a model without a tower)
        order = derangement(len(visual), seed)
        shuffled = caption_nll(
            model, tokenizer, with_clips_from([items[k] for k in visual], order), batch_size, progress
        )
        result["loss_true_clips"] = mean_nll([nll[k] for k in visual])
        result["loss_shuffled_clips"] = mean_nll(shuffled)
        result["grounding_gap"] = result["loss_shuffled_clips"] - result["loss_true_clips"]
        for k, j, (s, c) in zip(visual, order, shuffled):
            per_sample[k]["clip_from"] = items[visual[j]]["id"]
            per_sample[k]["loss_shuffled_clip"] = s / max(c, 1)
    elif visual:
        logger.warning("the grounding gap needs at least two samples with a clip or image; it is left out")

    captions = generate_captions(model, tokenizer, items, version, batch_size, max_new_tokens, progress)
    refs = [[references[i["id"]]] for i in items]
    result["bleu4"] = bleu4(captions, refs)
    # CIDEr's idf comes from the corpus itself: with one clip every idf is 0.
    result["cider"] = cider(captions, refs) if len(items) > 1 else None
    for entry, text, ref in zip(per_sample, captions, refs):
        entry.update(caption=text, reference=ref[0])
    result["captions"] = per_sample
    return result


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    rows = [
        ("samples", f"{result['samples']} ({len(result.get('skipped', []))} unreadable, skipped)"),
        ("caption tokens", f"{result.get('caption_tokens', 'n/a')}"),
        ("caption loss (nats/token)", _fmt(result["loss"], ".4f")),
        ("perplexity", _fmt(result["perplexity"], ".3f")),
        ("loss, true clips", _fmt(result.get("loss_true_clips"), ".4f")),
        ("loss, shuffled clips", _fmt(result.get("loss_shuffled_clips"), ".4f")),
        ("grounding gap", _fmt(result.get("grounding_gap"), "+.4f")),
        ("BLEU-4 (0-100)", _fmt(result["bleu4"], ".2f")),
        ("CIDEr-D (0-10)", _fmt(result["cider"], ".3f")),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m llava.eval.captions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", help="the language model of an adapter-only run given as --model-path")
    parser.add_argument("--vision-tower", help="where an adapter-only run's tower is now, if it moved")
    parser.add_argument("--data", required=True, help="LLaVA JSON/JSONL with reference captions")
    parser.add_argument("--video-folder")
    parser.add_argument("--image-folder")
    parser.add_argument(
        "--version", help="prompt template (default: the one the checkpoint was trained with, else plain)"
    )
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: the model's mm_num_frames)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="of the clip shuffle")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", help="write the JSON result here (with every caption)")
    parser.add_argument(
        "--json", action="store_true", help="print the JSON result on stdout (the table goes to stderr)"
    )
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.out:
        from ..serve.checks import check_output_file

        check_output_file(args.out)
    result = evaluate(
        args.model_path,
        args.data,
        args.video_folder,
        args.image_folder,
        args.version,
        args.batch_size,
        args.max_new_tokens,
        args.device,
        args.seed,
        model_base=args.model_base,
        num_frames=args.num_frames,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        vision_tower=args.vision_tower,
    )
    table = format_table(result)
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        print(table)
    if args.out:
        with saving(args.out, "the evaluation result"), open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, ensure_ascii=False, indent=1)
    return result


# The command line: an expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status (a
# traceback only for a bug, or with LLAVA_DEBUG=1); main itself raises, for callers in Python.
cli = entry_point(main)

if __name__ == "__main__":
    cli()
