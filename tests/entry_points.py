"""Running an entry point's `cli` function in this process, the way `python -m MODULE ARGS` runs it, for
tests of its failures: the same code from argument parsing to the one error line and the exit status,
without the 4-5 s each new interpreter spends importing torch, transformers and every family. Each
entry point also keeps one test through a real `python -m` subprocess (the `__main__` wiring)."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from dataclasses import dataclass


@dataclass
class Ended:
    """What a command left behind: its exit status and everything it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(cli, argv: list, monkeypatch=None) -> Ended:
    """Calls `cli` with sys.argv set to `argv` (or `cli(argv)` where it takes them), capturing stdout and
    stderr (logging included: handlers made during the call write to the captured streams)."""
    out, err = io.StringIO(), io.StringIO()
    saved_argv, root = sys.argv, logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    sys.argv = ["prog", *map(str, argv)]
    status = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                result = cli()
                status = result if isinstance(result, int) else 0
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return Ended(status, out.getvalue(), err.getvalue())
