"""A training command line as a mapping of settings: the one reader of `--name value` tokens.

`read(argv)` turns `--name value`, `--name=value`, `--name v1 v2` (a list flag such as --mm_fast_grid)
and a bare `--name` into `{name: value}`, with `--a-b` and `--a_b` read as the one name `a_b`, and takes
out `--config RECIPE`. The recipe (recipe.py) is a mapping too; flags are laid over it as mappings
(settings.py), and the merged mapping goes to the argument parser once, through `tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError

CONFIG_FLAG = "--config"


def is_flag(token: str) -> bool:
    """`--name` or `--name=value`; not a value that merely starts with dashes and holds a space, such as
    --eval_milestones' "--minimal-pairs pairs/" (argparse reads such a token as a value too)."""
    name = token.partition("=")[0]
    return token.startswith("--") and len(name) > 2 and not any(c.isspace() for c in name)


def setting_name(flag: str) -> str:
    """`--mm-fast-grid` and `--mm_fast_grid` -> `mm_fast_grid`."""
    return flag.removeprefix("--").replace("-", "_")


@dataclass
class CommandLine:
    """What a command line says: the recipe it names, its flags in order (a flag given twice keeps its
    last value, as argparse does), and tokens that follow no flag (the parser reports them)."""

    recipe: str | None = None
    flags: dict[str, object] = field(default_factory=dict)
    stray: list[str] = field(default_factory=list)


def read(argv: list[str]) -> CommandLine:
    """The flags of `argv`: a flag's value is None (bare), its one token, or the list of its tokens."""
    line = CommandLine()
    name, values = None, []

    def close():
        if name is None:
            return
        if name == CONFIG_FLAG[2:]:
            _take_recipe(line, values)
        else:
            line.flags.pop(name, None)  # a repeated flag moves to where it was last given
            line.flags[name] = None if not values else values[0] if len(values) == 1 else list(values)

    for token in argv:
        if is_flag(token):
            close()
            flag, eq, value = token.partition("=")
            name, values = setting_name(flag), [value] if eq else []
        elif name is None:
            line.stray.append(token)
        else:
            values.append(token)
    close()
    return line


def _take_recipe(line: CommandLine, values: list[str]) -> None:
    if line.recipe is not None:
        raise UsageError(
            f"{CONFIG_FLAG} given twice: one recipe per run (a recipe may start from another with 'base:')"
        )
    if len(values) != 1 or not values[0]:
        raise UsageError(f"{CONFIG_FLAG} needs one recipe file, e.g. {CONFIG_FLAG} recipes/italian_video.yaml")
    line.recipe = values[0]


def tokens(settings: dict[str, object], stray: list[str] = ()) -> list[str]:
    """The argument parser's tokens for a mapping of settings: lists give several tokens, booleans
    `True`/`False`, None a bare flag."""
    argv = list(stray)
    for name, value in settings.items():
        argv.append(f"--{name}")
        if isinstance(value, list | tuple):
            argv.extend(str(v) for v in value)
        elif value is not None:
            argv.append(str(value))
    return argv
