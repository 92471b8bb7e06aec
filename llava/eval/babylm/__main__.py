"""`python -m llava.eval.babylm COMMAND ...`: the BabyLM pipeline's evaluations (see the package's
docstring); each command's flags are its own (`COMMAND --help`)."""

import sys

from ...errors import UsageError, entry_point
from . import devbench, export, reading, zero_shot

COMMANDS = {"devbench": devbench.main, "export": export.main, "reading": reading.main, "zero_shot": zero_shot.main}


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0].replace("COMMAND", "|".join(COMMANDS)))
        return 0
    if argv[0] not in COMMANDS:
        raise UsageError(f"unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)})")
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    entry_point(main)()
