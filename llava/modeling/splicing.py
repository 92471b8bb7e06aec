"""Visual tokens spliced into a batch's text, as tensor functions that know nothing of the model: one
sample's text joined with its visual tokens at its placeholders, text cut to the language model's
positions, and the batch padded again on the side it came padded on. The multimodal core
(llava_arch.py) encodes the visual inputs and calls these."""

from __future__ import annotations

import torch

from .constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


def splice_sample(ids, embeds, labels, features) -> list[torch.Tensor]:
    """One sample's unpadded `ids` with their `embeds` and `labels`, a placeholder's position taken by the
    next visual tokens of `features` (an iterator over the batch's, in placeholder order) ->
    `[embeds, labels, is_visual]`. Visual positions get IGNORE_INDEX labels."""
    cuts = torch.nonzero(ids == IMAGE_TOKEN_INDEX).flatten().tolist()
    pieces_e, pieces_l, pieces_v = [], [], []
    start = 0
    for cut in cuts + [len(ids)]:
        pieces_e.append(embeds[start:cut])
        pieces_l.append(labels[start:cut])
        pieces_v.append(torch.zeros(cut - start, dtype=torch.bool, device=ids.device))
        if cut < len(ids):
            visual = next(features)
            pieces_e.append(visual)
            pieces_l.append(torch.full((len(visual),), IGNORE_INDEX, dtype=labels.dtype, device=ids.device))
            pieces_v.append(torch.ones(len(visual), dtype=torch.bool, device=ids.device))
        start = cut + 1
    return [torch.cat(pieces_e), torch.cat(pieces_l), torch.cat(pieces_v)]


def truncate_text(seq, limit: int) -> list[torch.Tensor]:
    """A spliced sample (`[embeds, labels, is_visual]`) cut to `limit` positions by dropping text from its
    end, never a visual token; refused where the visual tokens alone do not fit."""
    embeds, seq_labels, is_visual = seq
    num_visual = int(is_visual.sum())
    if num_visual > limit:
        raise ValueError(
            f"{num_visual} visual tokens do not fit the language model's {limit} positions; "
            "use fewer frames or smaller packer grids"
        )
    keep = torch.ones_like(is_visual)
    text_positions = torch.nonzero(~is_visual).flatten()
    keep[text_positions[len(text_positions) - (len(embeds) - limit) :]] = False
    return [embeds[keep], seq_labels[keep], is_visual[keep]]


def pad_batch(sequences, attention_mask, device):
    """Spliced samples -> `(position_ids, attention_mask, inputs_embeds, labels)` of one batch, padded on
    the side the input was: left-padded generation prompts stay left-padded, right-padded training
    batches stay right-padded. Padding has IGNORE_INDEX labels and a zero mask."""
    left = attention_mask is not None and not bool(attention_mask[:, 0].all())
    batch, length = len(sequences), max(len(s[0]) for s in sequences)
    hidden, dtype = sequences[0][0].shape[-1], sequences[0][0].dtype
    embeds = torch.zeros(batch, length, hidden, dtype=dtype, device=device)
    new_labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=device)
    mask_dtype = attention_mask.dtype if attention_mask is not None else torch.long
    new_mask = torch.zeros(batch, length, dtype=mask_dtype, device=device)
    positions = torch.zeros(batch, length, dtype=torch.long, device=device)
    for b, (seq_embeds, seq_labels, _) in enumerate(sequences):
        n = len(seq_embeds)
        span = slice(length - n, length) if left else slice(0, n)
        embeds[b, span] = seq_embeds
        new_labels[b, span] = seq_labels
        new_mask[b, span] = 1
        positions[b, span] = torch.arange(n, device=device)
    return positions, new_mask, embeds, new_labels
