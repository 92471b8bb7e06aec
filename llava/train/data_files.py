"""Which samples a `--data_path` names: JSON list or JSONL files, joined by commas, LLaVA-NeXT's brace
form `/data/{a,b,c}.json`, and LLaVA-NeXT's YAML mixtures with a sampling strategy per file."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re

logger = logging.getLogger("llava.train.data")


def read_sample_file(path: str) -> list[dict]:
    """The samples of one JSON list or JSONL file (not yet validated)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("["):
        samples = json.loads(text)
    else:  # JSONL: one sample per non-empty line
        samples = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    samples.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not a JSON line ({e})") from None
    if not all(isinstance(s, dict) for s in samples):
        raise ValueError(f"{path}: expected a list of sample objects")
    return samples


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
            raise ValueError(f"--data_path {piece}: only one {{a,b,c}} group per path is understood")
        else:
            paths.append(piece)
    return paths


def is_mixture(path: str) -> bool:
    return path.lower().endswith((".yaml", ".yml"))


def _sampling_count(strategy: str, total: int, where: str) -> tuple[str, int]:
    """LLaVA-NeXT's `sampling_strategy`: `all`, or `first|end|random:N` with N a count or a percentage
    (rounded up, as LLaVA-NeXT does)."""
    strategy = str(strategy).strip()
    if strategy == "all":
        return "all", total
    kind, sep, amount = strategy.partition(":")
    if not sep or kind not in ("first", "end", "random"):
        raise ValueError(f"{where}: sampling_strategy {strategy!r}; expected all, first:N, end:N or random:N (N a count or a percentage)")
    try:
        if amount.endswith("%"):
            count = math.ceil(float(amount[:-1]) * total / 100)
        else:
            count = int(amount)
    except ValueError:
        raise ValueError(f"{where}: sampling_strategy {strategy!r}: {amount!r} is not a count or a percentage") from None
    if count < 0:
        raise ValueError(f"{where}: sampling_strategy {strategy!r} asks for a negative number of samples")
    return kind, min(count, total)


def read_mixture(path: str, seed: int = 0) -> list[tuple[str, int, dict]]:
    """A LLaVA-NeXT data mixture: `datasets: [{json_path, sampling_strategy}]` in YAML. Each entry's file
    (JSON list or JSONL; a relative path is read from the YAML file's folder, else from the working
    directory) contributes `first`, `end` or `random` N samples (N a count or a percentage of the file)
    or `all`. `random` draws with `seed`, so every rank and every restart reads the same samples.
    Returns `(file, index in file, sample)` triples."""
    import yaml

    with open(path, encoding="utf-8") as f:
        try:
            mixture = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    entries = mixture.get("datasets") if isinstance(mixture, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a 'datasets:' list of {{json_path, sampling_strategy}} entries")
    rng = random.Random(seed)
    chosen = []
    for number, entry in enumerate(entries):
        where = f"{path}: datasets[{number}]"
        if not isinstance(entry, dict) or not entry.get("json_path"):
            raise ValueError(f"{where} has no json_path")
        file = _mixture_file(path, str(entry["json_path"]), where)
        samples = read_sample_file(file)
        kind, count = _sampling_count(entry.get("sampling_strategy", "all"), len(samples), f"{where} ({entry['json_path']})")
        if kind in ("all", "first"):
            indices = range(count)
        elif kind == "end":
            indices = range(len(samples) - count, len(samples))
        else:
            indices = sorted(rng.sample(range(len(samples)), count))
        chosen += [(file, i, samples[i]) for i in indices]
        logger.info("%s: %d of %d samples (%s)", file, count, len(samples), entry.get("sampling_strategy", "all"))
    return chosen


def _mixture_file(mixture: str, json_path: str, where: str) -> str:
    if os.path.isabs(json_path):
        candidates = [json_path]
    else:
        candidates = [os.path.join(os.path.dirname(os.path.abspath(mixture)), json_path), json_path]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{where}: json_path {json_path} does not exist (looked at {' and '.join(candidates)})")
