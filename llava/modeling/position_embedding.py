import torch
from torch import nn


class VisualPositionEmbedding(nn.Module):
    """Learned time, row, column and track tables in the LM's hidden size, added to visual tokens.

    Indexed in half-units of the input grid (see token_packer.grid_positions), so a table along an
    axis of n cells has 2n - 1 rows. The tables are plain zero-initialized parameters rather than
    nn.Embedding so that no generic weight initialisation overwrites them: a fresh model starts exactly
    as if they were absent.
    """

    def __init__(self, dim: int, input_grid, num_tracks: int = 2):
        super().__init__()
        frames, rows, columns = input_grid
        self.time = nn.Parameter(torch.zeros(2 * frames - 1, dim))
        self.row = nn.Parameter(torch.zeros(2 * rows - 1, dim))
        self.column = nn.Parameter(torch.zeros(2 * columns - 1, dim))
        self.track = nn.Parameter(torch.zeros(num_tracks, dim))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """(tokens, 4) [time, row, column, track] -> (tokens, dim)."""
        p = positions.to(self.time.device)
        return self.time[p[:, 0]] + self.row[p[:, 1]] + self.column[p[:, 2]] + self.track[p[:, 3]]
