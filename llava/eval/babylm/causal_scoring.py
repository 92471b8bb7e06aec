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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence


def encode(tokenizer, sentence: str, completion: str) -> tuple[list[int], list[int]]:
    """(token ids, phrase mask) of one candidate: 1 where a token overlaps the completion."""
    encoded = tokenizer(sentence, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    start_char = len(sentence) - len(completion) + offsets[0][0]
    return list(ids), [1 if end > start_char else 0 for _, end in offsets]


def candidate_batches(tokenizer, items: list[dict], batch_size: int):
    """Batches of `batch_size` items, in order: (items, per candidate position a (ids, mask, phrase)
    triple of right-padded tensors)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        candidates = []
        for position in range(len(batch[0]["sentences"])):
            encoded = [encode(tokenizer, i["sentences"][position], i["completions"][position]) for i in batch]
            ids = pad_sequence([torch.tensor(e[0]) for e in encoded], batch_first=True, padding_value=pad)
            mask = pad_sequence([torch.ones(len(e[0]), dtype=torch.long) for e in encoded], batch_first=True)
            phrase = pad_sequence([torch.tensor(e[1]) for e in encoded], batch_first=True)
            candidates.append((ids, mask, phrase))
        yield batch, candidates


@torch.no_grad()
def score_candidates(model, candidates, temperatures: list[float], device) -> dict[float, torch.Tensor]:
    """Per temperature, a (items, candidates) tensor of summed log-probabilities of the scored tokens."""
    scores = {t: [] for t in temperatures}
    for ids, mask, phrase in candidates:
        inputs, targets = ids[:, :-1].to(device), ids[:, 1:].to(device)
        logits = model(input_ids=inputs, attention_mask=mask[:, :-1].to(device)).logits
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
