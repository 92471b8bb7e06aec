"""Caption evaluation: loss with the true clips and with shuffled ones (the grounding gap), and greedy
captions from a trained checkpoint.

`python -m llava.eval.captions --model-path CKPT --data VAL.json [--video-folder DIR]` prints a table and
writes JSON. Loss is the mean negative log-likelihood per caption token (EOS included), summed over the
whole set before dividing, so long and short captions weigh by their tokens.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random

import torch
from tqdm import tqdm

from ..constants import IGNORE_INDEX
from ..conversation import get_template
from ..model.builder import load_pretrained_model
from ..train.data import DataArguments, DataCollatorForSupervisedDataset, LazySupervisedDataset
from .metrics import bleu4, cider

logger = logging.getLogger(__name__)


def load_items(model, tokenizer, image_processor, data_path, video_folder=None, image_folder=None, version="plain"):
    """The evaluation set as dataset items (ids, labels, pixels), built by the training pipeline itself so
    that tokenization and preprocessing are exactly the ones the model was trained with."""
    args = DataArguments(data_path=data_path, video_folder=video_folder, image_folder=image_folder,
                         num_frames=getattr(model.config, "mm_num_frames", 8))
    tower = model.get_vision_tower()
    dataset = LazySupervisedDataset(
        data_path, tokenizer, args, image_processor=image_processor, template=version,
        model_max_length=getattr(tokenizer, "model_max_length", None) if tower is None else None,
        visual_tokens_per_input=model.get_model().num_visual_tokens if tower is not None else None,
    )
    items = [dataset[i] for i in range(len(dataset))]
    skipped = [i for i in items if i.get("skipped")]
    for item in skipped:
        logger.warning("skipping %s: %s", item["id"], item["reason"])
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
    return [{**item, "pixel_values": items[j]["pixel_values"], "modality": items[j]["modality"]} for item, j in zip(items, order)]


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else [x.to(device) for x in v] if k == "images" else v for k, v in batch.items()}


@torch.no_grad()
def caption_loss(model, tokenizer, items, batch_size: int = 16, progress: bool = False) -> float:
    collate = DataCollatorForSupervisedDataset(tokenizer)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in tqdm(range(0, len(items), batch_size), desc="loss", disable=not progress):
        batch = collate(items[start : start + batch_size])
        batch.pop("skipped")
        batch = _to(batch, device)
        # The model's loss is the mean over the batch's predicted tokens; weigh it by their number. The
        # visual block is spliced in after position 0, so the shifted text labels count them exactly.
        tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += model(**batch).loss.item() * tokens
        count += tokens
    return total / max(count, 1)


@torch.no_grad()
def generate_captions(model, tokenizer, items, conversations, version="plain", batch_size: int = 16,
                      max_new_tokens: int = 32, progress: bool = False) -> list[str]:
    """Greedy captions: each prompt is the sample's conversation without its answer."""
    template = get_template(version)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    captions = []
    for start in tqdm(range(0, len(items), batch_size), desc="captions", disable=not progress):
        chunk = items[start : start + batch_size]
        prompts = [template.prompt_ids(conversations[item["id"]], tokenizer) for item in chunk]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        images = [i["pixel_values"].to(device) for i in chunk if i["pixel_values"] is not None]
        modalities = [i["modality"] for i in chunk if i["pixel_values"] is not None]
        out = model.generate(ids, attention_mask=mask, images=images or None, modalities=modalities or None,
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        captions += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out]
    return captions


def evaluate(model_path, data_path, video_folder=None, image_folder=None, version="plain", batch_size=16,
             max_new_tokens=32, device="cpu", seed=0, progress=True) -> dict:
    tokenizer, model, image_processor, _ = load_pretrained_model(model_path, device=device)
    dataset, items = load_items(model, tokenizer, image_processor, data_path, video_folder, image_folder, version)
    conversations = {s["id"]: s["conversations"] for s in dataset.samples}
    references = {s["id"]: [t["value"] for t in s["conversations"] if t["from"] in ("gpt", "assistant")][-1:] for s in dataset.samples}
    loss = caption_loss(model, tokenizer, items, batch_size, progress)
    result = {"samples": len(items), "loss": loss, "perplexity": math.exp(loss)}
    if model.get_vision_tower() is not None:
        shuffled = with_clips_from(items, derangement(len(items), seed))
        result["loss_shuffled_clips"] = caption_loss(model, tokenizer, shuffled, batch_size, progress)
        result["grounding_gap"] = result["loss_shuffled_clips"] - loss
    captions = generate_captions(model, tokenizer, items, conversations, version, batch_size, max_new_tokens, progress)
    refs = [references[i["id"]] for i in items]
    result["bleu4"] = bleu4(captions, refs)
    result["cider"] = cider(captions, refs) if len(items) > 1 else None
    result["captions"] = [{"id": i["id"], "caption": c, "reference": r[0]} for i, c, r in zip(items, captions, refs)]
    return result


def format_table(result: dict) -> str:
    rows = [("samples", f"{result['samples']}"), ("caption loss", f"{result['loss']:.4f}"),
            ("perplexity", f"{result['perplexity']:.3f}")]
    if "grounding_gap" in result:
        rows += [("loss, shuffled clips", f"{result['loss_shuffled_clips']:.4f}"),
                 ("grounding gap", f"{result['grounding_gap']:+.4f}")]
    rows += [("BLEU-4", f"{result['bleu4']:.2f}"), ("CIDEr", "n/a" if result["cider"] is None else f"{result['cider']:.3f}")]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--data", required=True, help="LLaVA JSON/JSONL with reference captions")
    parser.add_argument("--video-folder")
    parser.add_argument("--image-folder")
    parser.add_argument("--version", default="plain")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the JSON result here (with every caption)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = evaluate(args.model_path, args.data, args.video_folder, args.image_folder, args.version,
                      args.batch_size, args.max_new_tokens, args.device)
    print(format_table(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
