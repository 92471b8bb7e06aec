"""Which frames of a clip are kept: one rule, shared by the video reader (frames decoded from a file)
and the model (longer clips than it takes, given as tensors by a client)."""


def sample_indices(n_total: int, num_frames: int) -> list[int]:
    """Centres of ``num_frames`` equal segments of ``range(n_total)`` (integer arithmetic, no float drift)."""
    return [(2 * i + 1) * n_total // (2 * num_frames) for i in range(num_frames)]
