"""Where a long evaluation stopped, so that running it again goes on from there.

An evaluation writes each finished unit (a batch of items, a row) as one JSON line to a progress file in
its results folder, flushed as it goes; run again with the same inputs, it reads the lines back and scores
only what is missing; once the results are written the file is removed. The first line is a fingerprint
of what the scores depend on (the data's bytes, the model folder's files by name, size and time, the
flags): a file written for other inputs is started afresh, never mixed in. A line cut short by the stop
is dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

logger = logging.getLogger("llava.eval.babylm")


def fingerprint(parts) -> str:
    """A digest of `parts`: files and folders by content (data) or by name, size and modification time
    (model folders, whose weights are large), anything else by its text."""
    digest = hashlib.sha256()
    for part in parts:
        path = Path(str(part))
        try:
            is_file, is_dir = path.is_file(), path.is_dir()
        except OSError:  # text that is no file name
            is_file = is_dir = False
        if is_file:
            digest.update(path.read_bytes())
        elif is_dir:
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                stat = file.stat()
                digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        digest.update(f"|{part}|".encode())
    return digest.hexdigest()


class Progress:
    """The finished units of one evaluation, by key; `add` records one, `finish` removes the file."""

    def __init__(self, folder: Path, name: str, depends_on):
        self.path = Path(folder) / f".{name}.progress.jsonl"
        self.stamp = fingerprint(depends_on)
        self.done: dict = {}
        if self.path.exists():
            self._read()
        if self.done:
            logger.info("%s: going on after %d finished units (%s)", name, len(self.done), self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"fingerprint": self.stamp}) + "\n")
        self._file = None

    def _read(self) -> None:
        lines = self.path.read_text().splitlines()
        try:
            if not lines or json.loads(lines[0]).get("fingerprint") != self.stamp:
                return
        except json.JSONDecodeError:
            return
        kept = lines[:1]
        for line in lines[1:]:
            try:
                key, value = json.loads(line)
            except (json.JSONDecodeError, ValueError):
                break  # the line being written when the run stopped
            self.done[key] = value
            kept.append(line)
        if len(kept) < len(lines):  # rewritten without it, so that new lines follow whole ones
            self.path.write_text("".join(line + "\n" for line in kept))

    def __contains__(self, key) -> bool:
        return key in self.done

    def __getitem__(self, key):
        return self.done[key]

    def add(self, key, value) -> None:
        if self._file is None:
            self._file = self.path.open("a")
        self._file.write(json.dumps([key, value]) + "\n")
        self._file.flush()
        self.done[key] = value

    def finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path.exists():
            os.remove(self.path)
