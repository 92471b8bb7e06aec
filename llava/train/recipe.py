"""Training recipes: a run's settings as a YAML file of the training's flags.

`python -m llava.train.train --config recipes/italian_video.yaml [--flag value ...]` trains as the file
says; a flag on the command line wins over the file's value for that setting. A recipe is a mapping of
flag names (without the dashes) to values: a string or number, true/false, or a list (the packer grids).
`base: other.yaml` (a path relative to the recipe's folder) starts from another recipe; a key set to
`null` removes what the base set (a text-only recipe removes the tower). On the command line, `--FLAG
none` removes a recipe's value where the flag's own default is unset (`--deepspeed none` trains without
DeepSpeed, `--vision_tower none` trains text only).

Relative paths inside a recipe are taken from the folder the run starts in, like those on a command line.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re

from ..errors import InputError, UsageError
from .llava_flags import ARGV_RULES, is_flag, same_setting

CONFIG_FLAG = "--config"
BASE_KEY = "base"


def expand(argv: list[str], argument_classes) -> list[str]:
    """`argv` with its `--config FILE` replaced by the recipe's flags, placed first and without the
    settings the rest of `argv` sets; a `--FLAG none` for a flag whose default is unset drops that flag.
    `argument_classes`: the dataclasses the flags belong to (to check the recipe's names and defaults;
    none: no check)."""
    path, rest = _take_config(argv)
    fields = {f.name: f for cls in argument_classes for f in dataclasses.fields(cls)}
    recipe = _flags_of(read(path), path, fields) if path else []
    given = _groups(rest)
    overridden = {same_setting(name) for name, _ in given}
    merged = [(name, values) for name, values in recipe if same_setting(name) not in overridden] + given
    unset = {
        name for name, values in given if [v.lower() for v in values] == ["none"] and _default_unset(fields.get(name))
    }
    return [token for name, values in merged if name not in unset for token in _tokens(name, values)]


def read(path: str, _seen: tuple[str, ...] = ()) -> dict:
    """The settings of a recipe file with its `base` applied (a key set to null removes the base's)."""
    real = os.path.realpath(path)
    if real in _seen:
        raise InputError(f"recipe bases form a loop: {' -> '.join(_seen + (real,))} ({path})")
    settings = _load(path)
    base = settings.pop(BASE_KEY, None)
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
    return settings


def _flags_of(settings: dict, path: str, fields: dict) -> list[tuple[str, list[str]]]:
    known = set(fields) | set(ARGV_RULES)
    flags = []
    for key, value in settings.items():
        name = str(key).replace("-", "_")
        if fields and name not in known:
            guess = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise InputError(
                f"unknown setting '{key}' in the recipe{hint}; it takes the training's flag names ({_where(path, key)})"
            )
        flags.append((name, _values(value, key, path)))
    return flags


def _values(value, key, path: str) -> list[str]:
    if isinstance(value, (bool, int, float, str)):
        return [str(value)]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in value)
    ):
        return [str(v) for v in value]
    raise InputError(f"'{key}' must be a value or a list of values, not {value!r} ({_where(path, key)})")


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


def _take_config(argv: list[str]) -> tuple[str | None, list[str]]:
    path, rest, i = None, [], 0
    while i < len(argv):
        token = argv[i]
        if token == CONFIG_FLAG or token.startswith(CONFIG_FLAG + "="):
            if path is not None:
                raise UsageError(
                    f"{CONFIG_FLAG} given twice: one recipe per run (a recipe may start from another with '{BASE_KEY}:')"
                )
            if "=" in token:
                path = token.split("=", 1)[1]
            elif i + 1 < len(argv) and not is_flag(argv[i + 1]):
                path = argv[i + 1]
                i += 1
            else:
                path = ""
            if not path:
                raise UsageError(f"{CONFIG_FLAG} needs a recipe file, e.g. {CONFIG_FLAG} recipes/italian_video.yaml")
        else:
            rest.append(token)
        i += 1
    return path, rest


def _groups(argv: list[str]) -> list[tuple[str, list[str]]]:
    """`[(name, values)]`: each flag with the tokens that follow it up to the next flag (a list flag such
    as --mm_fast_grid takes several); tokens before any flag keep an empty name."""
    groups: list[tuple[str, list[str]]] = []
    for token in argv:
        if is_flag(token):
            name, eq, value = token[2:].partition("=")
            groups.append((name.replace("-", "_"), [value] if eq else []))
        elif groups:
            groups[-1][1].append(token)
        else:
            groups.append(("", [token]))
    return groups


def _tokens(name: str, values: list[str]) -> list[str]:
    return ([f"--{name}"] if name else []) + values


def _default_unset(field) -> bool:
    return field is not None and field.default is None and field.default_factory is dataclasses.MISSING


def value_of(name: str, argv: list[str]) -> str | None:
    """The value a setting has in a command line with its recipe (the last one given; None if unset)."""
    for flag, values in reversed(_groups(expand(argv, ()))):
        if flag == name:
            return " ".join(values)
    return None


def main(argv: list[str] | None = None) -> int:
    """`python -m llava.train.recipe NAME ARGS...`: prints the value of the flag NAME in ARGS with
    their --config recipe applied (an empty line if unset). train_italian_video.sh asks it where the
    run's output folder is."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: python -m llava.train.recipe NAME [--config RECIPE] [--flag value ...]\n\n"
            + main.__doc__.split(": ", 1)[1]
        )
        return 0
    print(value_of(argv[0], argv[1:]) or "")
    return 0


if __name__ == "__main__":
    from ..errors import entry_point

    raise SystemExit(entry_point(main)())
