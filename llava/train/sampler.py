"""Batches of one modality and similar lengths (LLaVA's `--group_by_modality_length`), or of similar
lengths only (`--group_by_length`).

The sampler yields one flat order of sample indices. The data loader cuts it into per-device batches of
`batch_size` consecutive indices, and with several processes hands batch `i` to rank `i % world_size`
(accelerate's batch-sampler sharding). So the order is built from "mega-batches" of
`world_size * batch_size` indices, each drawn from one modality: every rank's batch of a step comes from
the same mega-batch, hence from one modality. Inside a mega-batch the samples are sorted by length, so
each batch holds samples of similar lengths (less padding).

Modalities are 'media' (image or video) and 'text' (no visual input), as in LLaVA: images and videos
share batches (their visual token counts are part of their lengths, so the sort still separates them
mostly). Every sample is visited once per epoch: what does not fill a whole mega-batch of its modality
goes to the end (media leftovers, then text leftovers), so only the last batch or two of an epoch can
mix modalities. The order depends on the seed and the epoch only: the same on every rank, and again
on resume.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ModalityLengthGroupedSampler(Sampler[int]):
    def __init__(
        self, lengths: list[int], has_media: list[bool] | None, batch_size: int, world_size: int = 1, seed: int = 0
    ):
        """`lengths`: a length per sample (text words plus visual tokens); `has_media`: whether each
        sample has an image or a video, or None to group by length only."""
        if has_media is not None and len(has_media) != len(lengths):
            raise ValueError(f"{len(lengths)} lengths but {len(has_media)} modality flags")
        self.lengths = list(lengths)
        self.has_media = list(has_media) if has_media is not None else None
        self.megabatch = batch_size * world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def _groups(self) -> list[list[int]]:
        if self.has_media is None:
            return [list(range(len(self.lengths)))]
        media = [i for i, m in enumerate(self.has_media) if m]
        text = [i for i, m in enumerate(self.has_media) if not m]
        return [g for g in (media, text) if g]

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        full, leftovers = [], []
        for group in self._groups():
            order = [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
            cut = len(order) - len(order) % self.megabatch
            full += [order[i : i + self.megabatch] for i in range(0, cut, self.megabatch)]
            if cut < len(order):
                leftovers.append(order[cut:])
        full = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        for megabatch in full + leftovers:
            yield from sorted(megabatch, key=lambda i: -self.lengths[i])
