"""The samples a `--data_path` names, read and validated: what training, its preflight checks, the feature
cache and the inference commands all read before anything else.

A sample is `{"id", "video" | "image" (optional), "conversations": [...]}` (LLaVA's format; the media
path relative to a video or image folder). Validated, it becomes `{"id", "modality", "media",
"conversations"}` with one visual placeholder where it has a medium, and LLaVA-ST's `"variables"` where it
has coordinates (boxes and spans, as numbers or placeholders: grounded_samples.py). Which files a
`--data_path` names, and how their problems are listed, is files.py.
"""

from __future__ import annotations

import os

from ..constants import DEFAULT_IMAGE_TOKEN, DEFAULT_VIDEO_TOKEN
from ..errors import InputError, UsageError
from ..mm_utils import count_placeholders
from .files import DataProblem, data_error, is_mixture, read_mixture, scan_sample_file, split_data_path
from .grounded_samples import ground_turns
from .templates import to_messages

MODALITIES = ("video", "image")


def prepare_sample(sample: dict, where: str, numbers: bool = False) -> dict:
    """Validates one sample and normalizes it: `{"id", "modality", "media", "conversations"}` (and
    `"variables"` where it has coordinates, written as placeholders in the conversations). Raises
    InputError naming the sample and `where` (its file and place: `data.json #13`, `data.jsonl:14`).
    `numbers`: boxes and spans written as numbers are coordinates (a model with coordinate tokens reads
    the data; grounded_samples.py)."""
    sample_id = str(sample.get("id", where))
    name = f"sample {sample_id!r} ({where})"
    conversations = sample.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise InputError(f"{name} has no 'conversations' list")
    try:
        messages = to_messages(conversations)
    except ValueError as e:
        raise InputError(f"{name}: {e}") from None
    media = [key for key in MODALITIES if sample.get(key)]
    if len(media) > 1:
        raise InputError(f"{name} has both a video and an image; one visual input per sample")
    modality = media[0] if media else None
    if modality and not isinstance(sample[modality], str):
        raise InputError(f"{name}: '{modality}' must be one path (lists of media are not supported)")

    counts = [count_placeholders(m["content"]) for m in messages]
    if any(c for c, m in zip(counts, messages) if m["role"] == "assistant"):
        raise InputError(f"{name} has a visual placeholder in an answer; placeholders belong to human turns")
    placeholders = sum(counts)
    turns = [{"from": m["role"], "value": m["content"]} for m in messages]
    if modality is None and placeholders:
        raise InputError(f"{name} has {placeholders} visual placeholder(s) but no 'video' or 'image'")
    if modality and placeholders > 1:
        raise InputError(f"{name} has {placeholders} visual placeholders for its one {modality}")
    try:
        grounded = ground_turns(turns, sample.get("variables"), numbers)
    except ValueError as e:
        raise InputError(f"{name}: {e}") from None
    if grounded:
        turns, variables = grounded
    if modality and not placeholders:
        # LLaVA behaviour: the visual block goes before the first human turn's text.
        token = DEFAULT_VIDEO_TOKEN if modality == "video" else DEFAULT_IMAGE_TOKEN
        first_user = next((i for i, t in enumerate(turns) if t["from"] == "user"), None)
        if first_user is None:
            turns.insert(0, {"from": "user", "value": token})
        else:
            turns[first_user] = {"from": "user", "value": f"{token}\n{turns[first_user]['value']}"}
    prepared = {
        "id": sample_id,
        "modality": modality,
        "media": sample[modality] if modality else None,
        "conversations": turns,
    }
    if grounded:  # only then: a sample without coordinates stays as it always was
        prepared["variables"] = variables
    return prepared


def read_samples(data_path: str, seed: int = 0, numbers: bool = False) -> tuple[list[dict], list[DataProblem]]:
    """Every sample that --data_path names (files, brace groups, YAML mixtures), validated, and every
    problem found on the way: a file that is missing, empty or not JSON, each bad JSONL line, each
    malformed sample. Samples with a problem are left out."""
    paths = split_data_path(data_path)
    if not paths:
        raise UsageError(f"--data_path names no file ({data_path!r})")
    samples, problems = [], []
    for path in paths:
        if os.path.isdir(path):
            problems.append(DataProblem(path, "--data_path names a folder, not a data file"))
            continue
        if not os.path.isfile(path):
            problems.append(DataProblem(path, "--data_path file does not exist"))
            continue
        if is_mixture(path):
            triples = read_mixture(path, seed, problems)
        else:
            entries, file_problems = scan_sample_file(path)
            problems += file_problems
            triples = [(path, place, entry) for place, entry in entries if isinstance(entry, dict)]
        for file, place, sample in triples:
            try:
                samples.append(prepare_sample(sample, place, numbers))
            except InputError as e:
                problems.append(DataProblem(file, str(e), whole=True))
    if not samples and not problems:  # e.g. a mixture whose strategies pick nothing
        problems.append(DataProblem(data_path, "--data_path picks no samples"))
    return samples, problems


def load_samples(data_path: str, seed: int = 0, numbers: bool = False) -> list[dict]:
    """The validated samples of --data_path; one DataFileError (an InputError) lists every problem."""
    samples, problems = read_samples(data_path, seed, numbers)
    if problems:
        raise data_error(problems)
    return samples
