"""Whether this process is one of several ranks: the test every collective of the training code makes first
(a single process, or torch.distributed not started, runs alone and talks to no one)."""

from __future__ import annotations

import torch.distributed as dist


def is_distributed() -> bool:
    """A started process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
