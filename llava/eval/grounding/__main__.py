"""`python -m llava.eval.grounding COMMAND ...`: grounding evaluation as LLaVA-ST reports it (see the
package's docstring); each command's flags are its own (`COMMAND --help`)."""

import sys

from ...errors import UsageError, entry_point
from . import predict, score

# A command is a module with `main(argv)`: `predict` (a model over a set -> the predictions JSONL that
# `score` reads) and `score`.
COMMANDS = {"predict": predict.main, "score": score.main}


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n\n")[0].replace("COMMAND", "|".join(COMMANDS)))
        return 0
    if argv[0] not in COMMANDS:
        raise UsageError(f"unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)})")
    COMMANDS[argv[0]](argv[1:])
    return 0


cli = entry_point(main)

if __name__ == "__main__":
    cli()
