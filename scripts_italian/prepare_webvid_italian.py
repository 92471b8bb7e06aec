#!/usr/bin/env python
"""Turns a WebVid-style annotation file with Italian captions and a folder of downloaded clips into the
LLaVA JSON that `train_italian_video.sh` reads.

    python scripts_italian/prepare_webvid_italian.py --annotations webvid_it.csv \
        --video-folder data/webvid_italian/videos --out-dir data/webvid_italian

Annotations: CSV (with a header) or JSONL, one clip per row, with a clip id and the Italian caption;
other fields (duration, contentUrl, page_dir, ...) may be there and are kept out of the way. Column names
are found among common ones (`videoid`/`video_id`/`id`, `caption_it`/`name_it`/`caption`/`name`) or given
with --id-field / --caption-field. A clip's file is `--clip-pattern` filled with the row's fields
(default `{id}.mp4`, e.g. `{page_dir}/{videoid}.mp4` for WebVid's download layout).

Writes to --out-dir:
- `train_video.json`: one video+caption sample per readable clip (`"video"` relative to the video folder);
- `train_text.json`: the same captions as text-only samples (for MODE=text);
- `dropped.jsonl`: every row left out, with the reason (missing clip, unreadable clip, no caption).
Each clip is opened and decoded (the frames training will sample) so that a broken file is dropped here,
not discovered during training.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llava.video import VideoReadError, read_video_frames  # noqa: E402

logger = logging.getLogger("prepare_webvid_italian")

ID_FIELDS = ("videoid", "video_id", "id", "clip_id")
CAPTION_FIELDS = ("caption_it", "name_it", "caption", "name", "text")
DEFAULT_PROMPT = "<video>\nDescrivi il video."


def read_annotations(path: Path) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            text = f.read()
        if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pick_field(rows: list[dict], given: str | None, candidates: tuple[str, ...], what: str) -> str:
    fields = set(rows[0]) if rows else set()
    if given:
        if given not in fields:
            raise SystemExit(f"--{what}-field {given!r} is not a column of the annotations (columns: {sorted(fields)})")
        return given
    for name in candidates:
        if name in fields:
            return name
    raise SystemExit(f"no {what} column found among {sorted(fields)}; name it with --{what}-field")


def check_clip(args: tuple[str, int]) -> str | None:
    """None when the clip decodes, else the reason it does not."""
    path, num_frames = args
    try:
        read_video_frames(path, num_frames)
    except VideoReadError as e:
        return str(e)
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", required=True, type=Path, help="CSV or JSONL annotation file")
    parser.add_argument("--video-folder", required=True, type=Path, help="folder of the downloaded clips")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--id-field")
    parser.add_argument("--caption-field")
    parser.add_argument("--clip-pattern", default="{id}.mp4", help="clip path under --video-folder, filled with the row's fields and {id}")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="human turn of each video sample (must hold <video>)")
    parser.add_argument("--num-frames", type=int, default=8, help="frames decoded per clip when checking it")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--no-check", action="store_true", help="only check that clip files exist (no decoding)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if "<video>" not in args.prompt:
        raise SystemExit("--prompt must contain the <video> placeholder")

    rows = read_annotations(args.annotations)
    id_field = pick_field(rows, args.id_field, ID_FIELDS, "id")
    caption_field = pick_field(rows, args.caption_field, CAPTION_FIELDS, "caption")
    candidates, dropped = [], []
    for row in rows:
        clip_id = str(row.get(id_field, "")).strip()
        caption = " ".join(str(row.get(caption_field) or "").split())
        if not clip_id or not caption:
            dropped.append({"id": clip_id, "reason": "no clip id" if not clip_id else "no caption"})
            continue
        relative = args.clip_pattern.format(**{**row, "id": clip_id})
        path = args.video_folder / relative
        if not path.is_file():
            dropped.append({"id": clip_id, "path": str(path), "reason": "clip file missing"})
            continue
        candidates.append((clip_id, caption, relative, str(path)))

    reasons = [None] * len(candidates)
    if not args.no_check and candidates:
        jobs = [(path, args.num_frames) for *_, path in candidates]
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            reasons = list(tqdm(pool.map(check_clip, jobs, chunksize=8), total=len(jobs), desc="checking clips"))

    video_samples, text_samples = [], []
    for (clip_id, caption, relative, path), reason in zip(candidates, reasons):
        if reason is not None:
            dropped.append({"id": clip_id, "path": path, "reason": reason})
            continue
        answer = {"from": "gpt", "value": caption}
        video_samples.append({"id": clip_id, "video": relative, "conversations": [{"from": "human", "value": args.prompt}, answer]})
        text_samples.append({"id": clip_id, "conversations": [answer]})

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "train_video.json").write_text(json.dumps(video_samples, ensure_ascii=False, indent=1), encoding="utf-8")
    (args.out_dir / "train_text.json").write_text(json.dumps(text_samples, ensure_ascii=False, indent=1), encoding="utf-8")
    with (args.out_dir / "dropped.jsonl").open("w", encoding="utf-8") as f:
        for entry in dropped:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    unreadable = sum(1 for e in dropped if e["reason"] not in ("no clip id", "no caption", "clip file missing"))
    logger.info("%d rows: %d clips kept; dropped %d (%d unreadable), listed in %s", len(rows), len(video_samples),
                len(dropped), unreadable, args.out_dir / "dropped.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
