"""Running an entry point's `cli` function in this process, the way `python -m MODULE ARGS` runs it, for
tests of its failures: the same code from argument parsing to the one error line and the exit status,
without the 4-5 s each new interpreter spends importing torch, transformers and every family. Each
entry point also keeps one test through a real `python -m` subprocess (the `__main__` wiring)."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
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


# ------------------------------------------------------------------ output as a new process prints it
# Python's own warning filters at start-up (no -W, no PYTHONWARNINGS), in order. The libraries' filters
# made at import are not among them: pytest drops those after the import, so a warning they would hide
# shows here and fails the test (stricter, never silently weaker).
_INTERPRETER_WARNING_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)


class _CurrentStderr:
    """A stream that writes to whatever sys.stderr is when it writes (the captured one during a run)."""

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()


def _show_on_stderr(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _output_of_a_new_process():
    """Sets, for the block, what a new interpreter starts with, and puts everything back after it:
    - the root logger with no handler, at WARNING: the entry point's logging.basicConfig then adds its
      handler on the captured stderr (under pytest the root logger holds pytest's handlers, so basicConfig
      would add none and the command's log lines would not be seen; basicConfig(force=True) would close
      pytest's handlers);
    - transformers' own handler (made once, on the stderr of that moment) writing to the captured stderr,
      and the transformers logger's level as it was;
    - Python warnings printed on stderr under the interpreter's default filters, as a process prints them
      (pytest records them instead)."""
    root, library = logging.getLogger(), logging.getLogger("transformers")
    saved_handlers, saved_level, saved_library_level = root.handlers[:], root.level, library.level
    library_module = sys.modules.get("transformers.utils.logging")
    library_handler = getattr(library_module, "_default_handler", None)
    saved_stream = library_handler.setStream(_CurrentStderr()) if library_handler is not None else None
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()
            for action, category, module in reversed(_INTERPRETER_WARNING_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            warnings.showwarning = _show_on_stderr
            yield
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        library.setLevel(saved_library_level)
        if library_handler is not None:
            library_handler.setStream(saved_stream)


def run_cli_with_process_output(cli, argv: list) -> Ended:
    """run_cli, with the captured stderr holding everything `python -m` would print there: the command's
    log lines, transformers' warnings and Python warnings (see _output_of_a_new_process). What a new
    process prints while importing modules that this one imported already is not seen: each entry point
    keeps a test through a real subprocess for that."""
    with _output_of_a_new_process():
        return run_cli(cli, argv)
