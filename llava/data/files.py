"""Which samples a `--data_path` names: JSON list or JSONL files, joined by commas, LLaVA-NeXT's brace
form `/data/{a,b,c}.json`, and LLaVA-NeXT's YAML mixtures with a sampling strategy per file.

Reading a file finds every problem it can (a JSONL file: every bad line) rather than stopping at the
first, so that a user fixes a data file in one go: `DataProblem`s are collected, and `data_error` turns
them into one InputError whose one-line message lists them (up to `SHOWN_PROBLEMS`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass

from ..errors import InputError, UsageError, listing

logger = logging.getLogger(__name__)

# A message lists this many problems, then says how many more there are.
SHOWN_PROBLEMS = 20


# ------------------------------------------------------------------------------------------ problems
@dataclass(frozen=True)
class DataProblem:
    """One thing wrong with the data. `path` is the file as --data_path (or a mixture) names it; `line`
    and `column` where in it; `whole` marks a `what` that already says where (a sample's own message
    names its file and place)."""

    path: str
    what: str
    line: int | None = None
    column: int | None = None
    whole: bool = False

    def alone(self) -> str:
        """The message when this is the only problem: `WHAT (WHERE)`, WHERE as `path:line:column`."""
        if self.whole:
            return self.what
        where = self.path + "".join(f":{n}" for n in (self.line, self.column) if n)
        return f"{self.what} ({where})"

    def in_list(self, one_file: bool) -> str:
        """The item in a list of problems under a header naming the file(s)."""
        if self.whole:
            return self.what
        if one_file:
            where = f"line {self.line}" + (f" column {self.column}" if self.column else "") if self.line else ""
        else:
            where = os.path.basename(self.path) + "".join(f":{n}" for n in (self.line, self.column) if n)
        return f"{where}: {self.what}" if where else self.what


class DataFileError(InputError):
    """Problems in the data that --data_path names; the message lists them in one line."""

    def __init__(self, problems: list[DataProblem]):
        self.problems = list(problems)
        super().__init__(problems_line(self.problems))


class MissingDataFile(DataFileError, FileNotFoundError):
    """Every problem is a data file that does not exist (a FileNotFoundError, as callers catch)."""


def data_error(problems: list[DataProblem]) -> DataFileError:
    missing = all(p.what.endswith("does not exist") for p in problems)
    return (MissingDataFile if missing else DataFileError)(problems)


def problems_line(problems: list[DataProblem], limit: int = SHOWN_PROBLEMS) -> str:
    """One line: the problem itself, or `N problems in FILES: first; second; ... and K more`."""
    if len(problems) == 1:
        return problems[0].alone()
    files = list(dict.fromkeys(p.path for p in problems))
    named = ", ".join(files) if len(files) <= 3 else f"{len(files)} files ({', '.join(files[:3])}, ...)"
    items = listing((p.in_list(one_file=len(files) == 1) for p in problems), limit)
    return f"{len(problems)} problems in {named}: {items}"


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "true/false"
    names = {dict: "object", list: "list", str: "string", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _reason(error: json.JSONDecodeError) -> str:
    """json's message without its position ("Unterminated string starting at" -> "unterminated string")."""
    reason = error.msg.removesuffix(" starting at")
    return reason[0].lower() + reason[1:]


def _json_problem(path: str, error: json.JSONDecodeError, text: str) -> DataProblem:
    # The parser ran out of text inside the list (a string left open runs to the end too): a copy or a
    # write that stopped early, which deserves its own words.
    cut_short = error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string")
    if cut_short:
        what = f"the JSON list is cut short: the file ends inside it ({_reason(error)})"
    else:
        what = f"not valid JSON: {_reason(error)}"
    return DataProblem(path, what, line=error.lineno, column=error.colno)


# ------------------------------------------------------------------------------------------ reading
def scan_sample_file(path: str) -> tuple[list[tuple[str, object]], list[DataProblem]]:
    """The entries of one JSON list or JSONL file, in order, each with its place (`data.json #13`, the
    index in the list; `data.jsonl:14`, the line), and every problem found in the file. Entries that
    are not objects are returned too (a problem names each)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        return [], [DataProblem(path, f"not UTF-8 text (byte {e.start})")]
    except OSError as e:
        return [], [DataProblem(path, f"cannot be read: {(e.strerror or str(e)).lower()}")]
    if not text.strip():
        return [], [DataProblem(path, "the data file is empty")]
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:
            return [], [_json_problem(path, e, text)]
        # Text that starts with `[` and parses is a list: anything after the list is a JSONDecodeError.
        if not entries:
            return [], [DataProblem(path, "the data file holds an empty list: no samples")]
        name = os.path.basename(path)
        problems = [
            DataProblem(path, f"{name} #{i} is a JSON {_json_kind(entry)}, not a sample object", whole=True)
            for i, entry in enumerate(entries)
            if not isinstance(entry, dict)
        ]
        return [(f"{name} #{i}", entry) for i, entry in enumerate(entries)], problems
    whole = _one_json_object(text)
    if whole is not None:
        return [], [
            DataProblem(
                path,
                "the data file holds one JSON object, not a list of samples: expected a JSON list "
                "[{...}, {...}] or JSONL (one sample object per line)",
            )
        ]
    entries, problems = [], []
    name = os.path.basename(path)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(DataProblem(path, f"not JSON: {_reason(e)}", line=number, column=e.colno))
            continue
        if not isinstance(entry, dict):
            problems.append(DataProblem(path, f"a JSON {_json_kind(entry)}, not a sample object", line=number))
            continue
        entries.append((f"{name}:{number}", entry))
    return entries, problems


def _one_json_object(text: str) -> dict | None:
    """The object a whole file holds when it is one JSON object that is not a one-line sample: a
    pretty-printed object, or one that is no sample (`{"data": [...]}`). A JSONL file of one sample is
    not one."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    one_line = len(text.strip().splitlines()) == 1
    return None if one_line and "conversations" in value else value


def read_sample_file(path: str) -> list[dict]:
    """The samples of one JSON list or JSONL file (not yet validated); DataFileError lists its problems."""
    entries, problems = scan_sample_file(path)
    if problems:
        raise data_error(problems)
    return [entry for _, entry in entries]


def split_data_path(data_path: str) -> list[str]:
    """The files a --data_path names: comma-joined paths, each possibly in LLaVA-NeXT's brace form
    `/dir/{a,b,c}.json` (commas inside braces do not split)."""
    pieces = [p.strip() for p in re.split(r",(?![^{]*})", data_path) if p.strip()]
    paths = []
    for piece in pieces:
        match = re.fullmatch(r"(.*)\{([^{}]*)\}(.*)", piece)
        if match:
            head, names, tail = match.groups()
            paths += [f"{head}{name.strip()}{tail}" for name in names.split(",") if name.strip()]
        elif "{" in piece or "}" in piece:
            raise UsageError(f"--data_path {piece}: only one {{a,b,c}} group per path is understood")
        else:
            paths.append(piece)
    return paths


def is_mixture(path: str) -> bool:
    return path.lower().endswith((".yaml", ".yml"))


def _sampling_count(strategy: str, total: int) -> tuple[str, int]:
    """LLaVA-NeXT's `sampling_strategy`: `all`, or `first|end|random:N` with N a count or a percentage
    (rounded up, as LLaVA-NeXT does). ValueError says what is wrong with it."""
    strategy = str(strategy).strip()
    if strategy == "all":
        return "all", total
    kind, sep, amount = strategy.partition(":")
    if not sep or kind not in ("first", "end", "random"):
        raise ValueError(
            f"sampling_strategy {strategy!r}; expected all, first:N, end:N or random:N (N a count or a percentage)"
        )
    try:
        if amount.endswith("%"):
            count = math.ceil(float(amount[:-1]) * total / 100)
        else:
            count = int(amount)
    except ValueError:
        raise ValueError(f"sampling_strategy {strategy!r}: {amount!r} is not a count or a percentage") from None
    if count < 0:
        raise ValueError(f"sampling_strategy {strategy!r} asks for a negative number of samples")
    return kind, min(count, total)


def read_mixture(path: str, seed: int = 0, problems: list[DataProblem] | None = None) -> list[tuple[str, str, dict]]:
    """A LLaVA-NeXT data mixture: `datasets: [{json_path, sampling_strategy}]` in YAML. Each entry's file
    (JSON list or JSONL; a relative path is read from the YAML file's folder, else from the working
    directory) contributes `first`, `end` or `random` N samples (N a count or a percentage of the file)
    or `all`. `random` draws with `seed`, so every rank and every restart reads the same samples.
    Returns `(file, place in file, sample)` triples (see scan_sample_file). Problems (of the mixture and of its files) are
    appended to `problems` where given (an entry with a problem contributes nothing), else raised as
    one DataFileError."""
    found: list[DataProblem] = []
    chosen = _read_mixture(path, seed, found)
    if problems is not None:
        problems += found
    elif found:
        raise data_error(found)
    return chosen


def _read_mixture(path: str, seed: int, problems: list[DataProblem]) -> list[tuple[str, str, dict]]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            mixture = yaml.safe_load(f)
    except yaml.YAMLError as e:
        problems.append(DataProblem(path, f"not valid YAML ({' '.join(str(e).split())})"))
        return []
    except (OSError, UnicodeDecodeError) as e:
        problems.append(DataProblem(path, f"cannot be read: {e}"))
        return []
    entries = mixture.get("datasets") if isinstance(mixture, dict) else None
    if not isinstance(entries, list) or not entries:
        problems.append(DataProblem(path, "expected a 'datasets:' list of {json_path, sampling_strategy} entries"))
        return []
    rng = random.Random(seed)
    chosen = []
    for number, entry in enumerate(entries):
        where = f"datasets[{number}]"
        if not isinstance(entry, dict) or not entry.get("json_path"):
            problems.append(DataProblem(path, f"{where} has no json_path"))
            continue
        json_path = str(entry["json_path"])
        file, looked_at = _mixture_file(path, json_path)
        if file is None:
            problems.append(
                DataProblem(
                    path, f"{where}: json_path {json_path} does not exist (looked at {' and '.join(looked_at)})"
                )
            )
            continue
        samples, file_problems = scan_sample_file(file)
        if file_problems:
            problems += file_problems
            continue
        strategy = entry.get("sampling_strategy", "all")
        try:
            kind, count = _sampling_count(strategy, len(samples))
        except ValueError as e:
            problems.append(DataProblem(path, f"{where} ({json_path}): {e}"))
            continue
        if kind in ("all", "first"):
            indices = range(count)
        elif kind == "end":
            indices = range(len(samples) - count, len(samples))
        else:
            indices = sorted(rng.sample(range(len(samples)), count))
        chosen += [(file, *samples[i]) for i in indices]
        logger.info("%s: %d of %d samples (%s)", file, count, len(samples), strategy)
    return chosen


def _mixture_file(mixture: str, json_path: str) -> tuple[str | None, list[str]]:
    """The file an entry's json_path names (None if there is none), and the places looked at."""
    if os.path.isabs(json_path):
        candidates = [json_path]
    else:
        candidates = [os.path.join(os.path.dirname(os.path.abspath(mixture)), json_path), json_path]
    return next((c for c in candidates if os.path.isfile(c)), None), candidates
