"""The model's coordinate tables (LLaVA-ST's LAPE): per axis (time, height, width) an input table that
gives a coordinate its embedding and an output head that scores the axis's bins, untied from the word
embeddings and from each other, as in LLaVA-ST. The ids and the `variables` of a sample are
coordinate_tokens.py; the arithmetic (interpolation, two-hot targets, `reparam`) is coordinates.py.

What the tables do:
- `embed`: a batch's ids to embeddings. Word ids use the word embeddings; a bin id (`<TEMP-042>`, what
  the model writes) its axis's input row; a placeholder (`<TEMP-INPUT>`, `<TEMP-OUTPUT>`) the
  interpolation of its value's two nearest input rows.
- `logits`: the bins' scores from the last hidden state, appended after the word logits, so that
  generation picks a bin id as it picks a word.
- `loss`: cross-entropy over words and bins together, the target of an output placeholder being the
  two-hot of its value over its axis's bins (LLaVA-ST's soft label; the word itself gets no weight).
- `visual_positions`: a visual token's time, row and column as coordinates, embedded by the mean of each
  axis's input and output tables (as LLaVA-ST adds them to its visual features).

Every table passes through `reparam` where it is used, so neighbouring bins share gradients while the
forward value stays the table itself.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .constants import IGNORE_INDEX
from .coordinate_tokens import OUTPUT_PLACEHOLDERS, PLACEHOLDERS, coordinate_bins, placeholder_ids
from .coordinates import AXES, interpolate, reparam, smoothing_matrix, two_hot


class CoordinateEmbedding(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.bins = coordinate_bins(config)
        self.config = config  # its vocab_size is where the bin ids start
        hidden = config.hidden_size
        # An output head is a table of the same shape, one row per bin, applied as a linear layer (`logits`).
        # Every table is read through its module's forward (`_table`), as DeepSpeed ZeRO-3 gathers a
        # partitioned weight only for the forward of the module that holds it.
        self.inputs = nn.ModuleDict({axis.lower(): nn.Embedding(self.bins, hidden) for axis in AXES})
        self.outputs = nn.ModuleDict({axis.lower(): nn.Embedding(self.bins, hidden) for axis in AXES})
        ids = placeholder_ids(config)
        # placeholder id -> its axis's index
        self.placeholder_axis = {ids[p]: AXES.index(axis) for p, (axis, _) in PLACEHOLDERS.items() if p in ids}
        self.output_placeholder_axis = {ids[p]: self.placeholder_axis[ids[p]] for p in OUTPUT_PLACEHOLDERS if p in ids}
        # Not a buffer: transformers 5 builds a model on the meta device and leaves buffers that are not in
        # the checkpoint unset; the matrix is a constant of `bins`, made where it is used.
        self._smoothing: torch.Tensor | None = None

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def reset_parameters(self, std: float) -> None:
        """Rows at the scale of the word embeddings, so that a coordinate enters the language model like a
        word does (nn.Embedding's own N(0, 1) is tens of times larger than a trained LM's rows)."""
        for module in [*self.inputs.values(), *self.outputs.values()]:
            nn.init.normal_(module.weight, std=std)

    def _table(self, kind: str, axis: int) -> torch.Tensor:
        module = (self.inputs if kind == "input" else self.outputs)[AXES[axis].lower()]
        device = module.weight.device
        if self._smoothing is None or self._smoothing.device != device:
            self._smoothing = smoothing_matrix(self.bins).to(device)
        return reparam(module(torch.arange(self.bins, device=device)), self._smoothing)

    # ------------------------------------------------------------------------------------ reading
    def embed(self, input_ids: torch.Tensor, values: torch.Tensor | None, word_embeddings: nn.Module) -> torch.Tensor:
        """Embeddings of `input_ids` (any shape; negative ids, the visual placeholders, read as id 0 and are
        replaced by the caller). `values`: each placeholder's value, shaped like `input_ids` (NaN where no
        placeholder), or None where the ids hold no placeholder.

        Every input table takes part in every call, by an exact zero where no id uses it: ranks of one
        distributed step then produce the same gradients in the same order whatever their batches hold
        (see llava/train/lockstep.py)."""
        embeds = word_embeddings(input_ids.clamp(0, self.vocab_size - 1))
        tables = torch.stack([self._table("input", a) for a in range(len(AXES))]).to(embeds.dtype)  # (axes, bins, h)
        embeds = embeds + tables.sum() * 0
        bins = input_ids >= self.vocab_size
        if bins.any():
            offset = input_ids[bins] - self.vocab_size
            embeds[bins] = tables[offset // self.bins, offset % self.bins]
        for token, axis in self.placeholder_axis.items():
            where = input_ids == token
            if not where.any():
                continue
            given = None if values is None else values.to(embeds.device)[where]
            if given is None or torch.isnan(given).any():
                raise ValueError(f"a coordinate placeholder (id {token}) has no value: pass the sample's variables")
            embeds[where] = interpolate(given.float(), tables[axis])
        return embeds

    # ------------------------------------------------------------------------------------ writing
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., hidden) -> (..., 3 * bins): time, height and width bins, in the order of their ids."""
        heads = torch.cat([self._table("output", a) for a in range(len(AXES))])
        return F.linear(hidden, heads.to(hidden.dtype))

    def output_targets(self, labels: torch.Tensor, values: torch.Tensor | None) -> list[list[tuple[int, float]]]:
        """Per row, the (axis, value) of each labelled output placeholder in order of position: read from the
        batch as the collator gave it, before visual tokens are spliced in (splicing keeps their order)."""
        rows = []
        for b in range(labels.shape[0]):
            found = []
            for position in torch.nonzero(self._is_output(labels[b])).flatten().tolist():
                value = float(values[b, position]) if values is not None else math.nan
                if math.isnan(value):
                    raise ValueError("an output coordinate placeholder in an answer has no value")
                found.append((self.output_placeholder_axis[int(labels[b, position])], value))
            rows.append(found)
        return rows

    def _is_output(self, labels: torch.Tensor) -> torch.Tensor:
        found = torch.zeros_like(labels, dtype=torch.bool)
        for token in self.output_placeholder_axis:
            found |= labels == token
        return found

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, targets, num_items_in_batch=None) -> torch.Tensor:
        """Next-token cross-entropy of `logits` (B, L, words + 3 * bins) against `labels` (B, L), an output
        placeholder's label replaced by the two-hot of its value (`targets`, from `output_targets`; a row
        cut short by truncation uses its first ones). Summed over labelled positions, divided by their count
        or by `num_items_in_batch` as transformers' own loss is."""
        logits, labels = logits[:, :-1].float(), labels[:, 1:]
        labelled = labels != IGNORE_INDEX
        lse = torch.logsumexp(logits, dim=-1)
        picked = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        is_output = self._is_output(labels)
        if is_output.any():
            picked = picked.clone()
            for b in range(labels.shape[0]):
                positions = torch.nonzero(is_output[b]).flatten()
                for position, (axis, value) in zip(positions.tolist(), targets[b]):
                    first = self.vocab_size + axis * self.bins
                    target = two_hot(torch.tensor([value]), self.bins)[0].to(logits.device)
                    picked[b, position] = (target * logits[b, position, first : first + self.bins]).sum()
        total = ((lse - picked) * labelled).sum()
        count = num_items_in_batch if num_items_in_batch is not None else labelled.sum().clamp(min=1)
        return total / (count.to(total.device) if torch.is_tensor(count) else count)

    # ------------------------------------------------------------------------------- visual tokens
    def visual_positions(self, positions: torch.Tensor, input_grid) -> torch.Tensor:
        """(tokens, 4) positions in half-units of the input grid (frames, rows, columns; see
        token_packer.grid_positions) -> (tokens, hidden). A token covering cells [a, b) of an axis of n
        cells sits at its centre, (a + b) / (2n) of the clip's length, height or width: its half-unit
        position is a + b - 1. Frames are the centres of equal segments of the clip, so a fast token's
        time is its frame's centre and a slow token's the centre of its frames."""
        embedding = 0
        for axis, cells in enumerate(input_grid):
            value = (positions[:, axis].float() + 1) / (2 * cells)
            table = (self._table("input", axis) + self._table("output", axis)) / 2
            embedding = embedding + interpolate(value.to(table.device), table)
        return embedding


@contextlib.contextmanager
def head_input(output_embeddings: nn.Module):
    """Captures what the language model's word head reads (`captured["hidden"]`): the last hidden state
    after the final norm, cut to the positions whose logits are kept, whatever a family names its parts."""
    captured = {}

    def hook(module, args):
        captured["hidden"] = args[0]

    handle = output_embeddings.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
