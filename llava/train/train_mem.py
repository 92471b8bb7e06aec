"""LLaVA's training entry point, for the command lines of LLaVA's and LLaVA-NeXT's scripts:
`python llava/train/train_mem.py ARGS`, `torchrun ... llava/train/train_mem.py ARGS` or
`deepspeed llava/train/train_mem.py ARGS`. It runs exactly what `python -m llava.train.train ARGS` runs.
(LLaVA's file of this name also chose FlashAttention-2; here `--attn_implementation` does, and sdpa is
the default.)"""

import os
import sys

if __package__ in (None, ""):
    # Run as a file, Python puts this file's folder first on the path, where train.py, data.py, ... would
    # shadow top-level modules of those names. The repository root (two folders up) takes its place, so
    # that `llava` imports from a checkout, as LLaVA's scripts expect.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(os.path.dirname(here)))

from llava.train.train import cli  # noqa: E402

if __name__ == "__main__":
    cli()
