"""`python -m llava.eval.babylm COMMAND ...`: the BabyLM pipeline's evaluations (see the package's
docstring); each command's flags are its own (`COMMAND --help`)."""

from ...errors import entry_point, subcommands
from . import devbench, export, reading, zero_shot

COMMANDS = {"devbench": devbench.main, "export": export.main, "reading": reading.main, "zero_shot": zero_shot.main}
main = subcommands(__doc__, COMMANDS)


if __name__ == "__main__":
    entry_point(main)()
