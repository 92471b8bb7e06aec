"""`python -m llava.eval.grounding COMMAND ...`: grounding evaluation as LLaVA-ST reports it (see the
package's docstring); each command's flags are its own (`COMMAND --help`)."""

from ...errors import entry_point, subcommands
from . import predict, score

# A command is a module with `main(argv)`: `predict` (a model over a set -> the predictions JSONL that
# `score` reads) and `score`.
COMMANDS = {"predict": predict.main, "score": score.main}
main = subcommands(__doc__, COMMANDS)

cli = entry_point(main)

if __name__ == "__main__":
    cli()
