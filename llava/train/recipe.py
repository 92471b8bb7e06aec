"""Training recipes: a run's settings as a YAML mapping of the training's flag names, with the command
line's flags laid over it.

`python -m llava.train.train --config recipes/italian_video.yaml [--flag value ...]` trains as the file
says; a flag on the command line wins over the file's value for that setting (also under another name of
the same setting: `--warmup_ratio` replaces a recipe's `warmup_steps`). A recipe maps flag names
(without the dashes) to values: a string or number, true/false, or a list (the packer grids).
`base: other.yaml` (a path relative to the recipe's folder) starts from another recipe; a key set to
`null` removes what the base set (a text-only recipe removes the tower). On the command line, `--FLAG
none` removes a recipe's value where the flag's own default is unset (`--deepspeed none` trains without
DeepSpeed, `--vision_tower none` trains text only).

Relative paths inside a recipe are taken from the folder the run starts in, like those on a command line.
This module imports neither torch nor transformers: the launcher asks it for settings (`main`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys

from ..errors import InputError
from . import command_line
from .legacy_flags import same_setting

BASE_KEY = "base"


@dataclasses.dataclass
class Layered:
    """A run's settings before parsing: the recipe's values with the command line's laid over them (in
    that order), and the tokens of the command line that follow no flag."""

    values: dict[str, object]
    stray: list[str]


def settings_of(argv: list[str], fields: dict | None = None) -> Layered:
    """The settings `argv` gives: its `--config` recipe, then its flags over it. `fields` (name ->
    dataclass field of the argument classes): the recipe's names are checked against them, and a
    `--FLAG none` whose field default is unset removes the setting. Without `fields` nothing is checked
    and `none` stays a value."""
    line = command_line.read(argv)
    values = read(line.recipe) if line.recipe else {}
    if line.recipe and fields is not None:
        _check_names(values, line.recipe, fields)
    given = {same_setting(name) for name in line.flags}
    values = {name: value for name, value in values.items() if same_setting(name) not in given}
    for name, value in line.flags.items():
        if fields is not None and _is_none(value) and _default_unset(fields.get(name)):
            values.pop(name, None)
        else:
            values[name] = value
    return Layered(values, line.stray)


def read(path: str, _seen: tuple[str, ...] = ()) -> dict:
    """The settings of a recipe file with its `base` applied (a key set to null removes the base's)."""
    real = os.path.realpath(path)
    if real in _seen:
        raise InputError(f"recipe bases form a loop: {' -> '.join(_seen + (real,))} ({path})")
    settings = _load(path)
    base = settings.pop(BASE_KEY, None)
    for key, value in settings.items():
        _check_value(key, value, path)
    if base is None:
        return {key: value for key, value in settings.items() if value is not None}
    if not isinstance(base, str):
        raise InputError(f"'{BASE_KEY}' must name another recipe file, not {base!r} ({_where(path, BASE_KEY)})")
    merged = read(os.path.join(os.path.dirname(path), base), _seen + (real,))
    for key, value in settings.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _load(path: str) -> dict:
    import yaml

    if not os.path.exists(path):
        raise InputError(f"recipe file not found ({path})")
    if os.path.isdir(path):
        raise InputError(f"the recipe is a folder, not a YAML file ({path})")
    try:
        with open(path, encoding="utf-8") as f:
            settings = yaml.safe_load(f)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise InputError(f"the recipe is not valid YAML: {e.problem} ({where})") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"cannot read the recipe: {' '.join(str(e).split())} ({path})") from None
    if settings is None:
        raise InputError(f"the recipe is empty ({path})")
    if not isinstance(settings, dict):
        raise InputError(f"a recipe is a mapping of flag names to values, not a {type(settings).__name__} ({path})")
    return {command_line.setting_name(str(key)): value for key, value in settings.items()}


def _check_value(key: str, value, path: str) -> None:
    scalar = (bool, int, float, str)
    if value is None or isinstance(value, scalar):
        return
    if isinstance(value, list) and value and all(isinstance(v, scalar) and not isinstance(v, bool) for v in value):
        return
    raise InputError(f"'{key}' must be a value or a list of values, not {value!r} ({_where(path, key)})")


def _check_names(values: dict, path: str, fields: dict) -> None:
    from .legacy_flags import LEGACY_FLAGS

    known = set(fields) | set(LEGACY_FLAGS)
    for name in values:
        if name not in known:
            guess = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise InputError(
                f"unknown setting '{name}' in the recipe{hint}; it takes the training's flag names ({_where(path, name)})"
            )


def _where(path: str, key) -> str:
    """`path:line` of the line that sets `key`, or the path where it is not found as written."""
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if re.match(rf"{re.escape(str(key))}\s*:", line):
                    return f"{path}:{number}"
    except OSError:
        pass
    return path


def _is_none(value) -> bool:
    return isinstance(value, str) and value.lower() == "none"


def _default_unset(field) -> bool:
    return field is not None and field.default is None and field.default_factory is dataclasses.MISSING


def value_of(name: str, argv: list[str]) -> str:
    """The value a setting has in a command line with its recipe, as text ('' where unset)."""
    value = settings_of(argv).values.get(name)
    if value is None:
        return ""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def main(argv: list[str] | None = None) -> int:
    """`python -m llava.train.recipe NAME [NAME ...] ARGS...`: prints the value of each setting NAME in ARGS
    with their --config recipe applied, one line each (an empty line where unset). train_italian_video.sh
    asks it where the run writes, which feature cache to fill and what to evaluate."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m llava.train.recipe NAME [NAME ...] [--config RECIPE] [--flag value ...]\n\n"
            + main.__doc__.split(": ", 1)[1]
        )
        return 0
    count = next((i for i, token in enumerate(argv) if command_line.is_flag(token)), len(argv))
    for name in argv[:count]:
        print(value_of(command_line.setting_name(name), argv[count:]))
    return 0


if __name__ == "__main__":
    from ..errors import entry_point

    raise SystemExit(entry_point(main)())
