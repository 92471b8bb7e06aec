"""Sentence log-probabilities for a causal language model, as the 2025 BabyLM pipeline computes them
(`sentence_zero_shot/dataset.py`'s causal processing and collation, `compute_results.py`'s causal loop).

- Each sentence is tokenized by the model's own tokenizer (`tokenizer(sentence,
  return_offsets_mapping=True)`: no leading space, the tokenizer's own special tokens).
- The scored tokens are those whose character span ends past the start of the completion (the whole
  sentence for BLiMP, the target for EWoK, the option for entity tracking...), found from the offsets.
- Token i is predicted from tokens before it, so the first token the tokenizer returns is never scored: a
  tokenizer that adds a BOS has every word scored; one that adds none (GPT-2's) loses the first word.
- A sentence's score at temperature T is the sum of log_softmax(logits / T) over its scored tokens. The
  candidates of an item are ranked by score; the first highest wins (torch.max's index).
Batches are right-padded with the pad id (EOS where the tokenizer has none); padding changes no score.

With a picture (the image tasks), the sentence goes to the model's processor with the picture, written
through the `--image_template` where one is given (the image token before the text), and the model gets
`pixel_values`; the scored tokens are then counted from the end as the pipeline counts them: the
sentence's own tokens, found by tokenizing it alone, are the last ones, and the character offsets of the
text with the image token are read as the pipeline reads them (so the template's token may shift the
first scored token, exactly as there). The logits' last text-length positions are the text's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence


def encode(processor, sentence: str, completion: str, image=None, image_sentence: str | None = None):
    """(token ids, phrase mask: 1 where a token overlaps the completion, pixel values or None) of one
    candidate. `processor` is the model's processor or its tokenizer; `image_sentence` is the sentence as
    the image template writes it (the sentence itself without a template)."""
    if image is None:
        encoded = processor(text=sentence, return_offsets_mapping=True)
        sentence_ids = encoded["input_ids"]
    else:
        encoded = processor(text=image_sentence or sentence, images=image, return_offsets_mapping=True)
        sentence_ids = processor(text=sentence, return_offsets_mapping=True)["input_ids"]
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if ids and isinstance(ids[0], list):  # a processor answers for a batch of one
        ids, offsets, sentence_ids = ids[0], offsets[0], sentence_ids[0]
    start = len(ids) - len(sentence_ids)  # where the sentence's own tokens begin (0 without a picture)
    start_char = len(sentence) - len(completion) + offsets[start][0]
    phrase = [0] * len(ids)
    for i, (_, end) in enumerate(offsets[start:], start):
        if end > start_char:
            phrase[i] = 1
    pixels = None if image is None else torch.FloatTensor(encoded["pixel_values"])
    return list(ids), phrase, pixels


def candidate_batches(processor, items: list[dict], batch_size: int, image_template: str | None = None):
    """Batches of `batch_size` items, in order: (items, their `encode_batch`)."""
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        yield batch, encode_batch(processor, batch, image_template)


def encode_batch(processor, batch: list[dict], image_template: str | None = None) -> list[tuple]:
    """Per candidate position, a (ids, mask, phrase, pixels) tuple: right-padded tensors, and the batch's
    pictures or None. `processor` is the model's processor or its tokenizer; `image_template` as the
    pipeline's templates write the image token in."""
    tokenizer = getattr(processor, "tokenizer", processor)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # Each item's picture decoded once for all its candidates: a Picture (tasks.py), a PIL image or None.
    pictures = [item.get("image") for item in batch]
    pictures = [p.load() if hasattr(p, "load") else p for p in pictures]
    candidates = []
    for position in range(len(batch[0]["sentences"])):
        encoded = []
        for item, image in zip(batch, pictures):
            sentence = item["sentences"][position]
            image_sentence = None
            if image is not None and image_template is not None:
                image_sentence = image_template.format(image_token=tokenizer.image_token, text=sentence)
            encoded.append(encode(processor, sentence, item["completions"][position], image, image_sentence))
        ids = pad_sequence([torch.tensor(e[0]) for e in encoded], batch_first=True, padding_value=pad)
        mask = pad_sequence([torch.ones(len(e[0]), dtype=torch.long) for e in encoded], batch_first=True)
        phrase = pad_sequence([torch.tensor(e[1]) for e in encoded], batch_first=True)
        pixels = None if encoded[0][2] is None else torch.cat([e[2] for e in encoded])
        candidates.append((ids, mask, phrase, pixels))
    return candidates


@torch.no_grad()
def score_candidates(model, candidates, temperatures: list[float], device) -> dict[float, torch.Tensor]:
    """Per temperature, a (items, candidates) tensor of summed log-probabilities of the scored tokens."""
    scores = {t: [] for t in temperatures}
    for ids, mask, phrase, pixels in candidates:
        inputs, targets = ids[:, :-1].to(device), ids[:, 1:].to(device)
        pictures = {} if pixels is None else {"pixel_values": pixels.to(device)}
        logits = model(input_ids=inputs, attention_mask=mask[:, :-1].to(device), **pictures).logits
        logits = logits[:, -inputs.shape[1] :]  # a model that prepends visual tokens returns more positions
        scored = phrase[:, 1:].to(device)
        for t in temperatures:
            log_probs = F.log_softmax(logits / t, dim=-1)
            chosen = torch.gather(log_probs, -1, targets.unsqueeze(-1)).squeeze(-1)
            scores[t].append(torch.sum(chosen * scored, dim=1).cpu())
    return {t: torch.stack(per_candidate, dim=1) for t, per_candidate in scores.items()}


def temperatures(minimum: float, maximum: float | None, interval: float) -> list[float]:
    """The pipeline's sweep: `minimum` alone, or torch.arange(minimum, maximum + interval, interval) with
    each value at least 1e-6 (float32 values, so that the keys and their printed forms are the pipeline's)."""
    if maximum is None:
        return (torch.ones(1) * minimum).tolist()
    return torch.arange(minimum, maximum + interval, interval).clamp(min=1e-6).tolist()
