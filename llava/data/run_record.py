"""OUTPUT_DIR/run.json: what a training run is, for the tools that set runs side by side
(`python -m llava.eval.compare`): its condition, its seed, and what it was trained from.

The condition is the kinds of input among the training samples: `text` (no sample with a picture),
`video+text`, `image+text` or `image+video+text`. Rank 0 writes the record when the run starts (a resumed
run writes the same one again).
"""

from __future__ import annotations

import json
import os

RUN_RECORD = "run.json"


def condition_of(samples: list[dict]) -> str:
    """The condition of a run that trains on `samples` (each with its `modality`: video, image or None)."""
    kinds = sorted({s.get("modality") for s in samples} - {None})
    return "+".join([*kinds, "text"])


def write_run_record(output_dir: str, record: dict) -> None:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RUN_RECORD)
    partial = path + ".partial"
    with open(partial, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(partial, path)


def read_run_record(run_dir: str) -> dict:
    """The record a run wrote; {} for a run without one (trained before runs recorded themselves)."""
    try:
        with open(os.path.join(run_dir, RUN_RECORD)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
