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

Mistakes end the script with one line, `error: WHAT (WHERE)`, before any clip is decoded: a missing or
malformed annotation file (every bad line named, up to five), a column or --clip-pattern field that is
not there, a missing video folder, an --out-dir that cannot be written. A run that keeps no clip at all
writes dropped.jsonl and fails, saying why the rows were dropped. LLAVA_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import string
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llava import errors  # noqa: E402
from llava.data.video import VideoReadError, read_video_frames  # noqa: E402
from llava.errors import InputError, UsageError, listing  # noqa: E402

logger = logging.getLogger("prepare_webvid_italian")

ID_FIELDS = ("videoid", "video_id", "id", "clip_id")
CAPTION_FIELDS = ("caption_it", "name_it", "caption", "name", "text")
DEFAULT_PROMPT = "<video>\nDescrivi il video."
# Problems of an annotation file named in its one error line; the rest are counted.
MAX_LISTED = 5
# Reasons for dropping a row before its clip is decoded; any other reason is the decoder's own words.
CLIP_PATTERN_UNFIT = "--clip-pattern cannot be filled from this row"
NOT_DECODED = ("no clip id", "no caption", CLIP_PATTERN_UNFIT, "clip file missing")


# ------------------------------------------------------------------------------------ annotations
def read_annotations(path: Path) -> list[dict]:
    """The rows of a CSV (with a header), JSON list or JSONL annotation file. A malformed file is one
    InputError naming its bad lines (up to MAX_LISTED), before any clip is looked at."""
    if not path.exists():
        raise InputError(f"annotations file not found ({path})")
    if path.is_dir():
        raise InputError(f"annotations path is a folder, not a CSV or JSONL file ({path})")
    data = path.read_bytes()
    try:
        # utf-8-sig: spreadsheet programs start their CSV exports with a byte-order mark, which would
        # otherwise end up in the first column's name.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(
            f"annotations are not UTF-8 text: byte 0x{data[e.start]:02x} on line {line} ({path}:{line})"
        ) from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = _json_rows(text, path)
    else:
        rows = _csv_rows(text, path)
    if not rows:
        raise InputError(f"annotations hold no rows ({path})")
    return rows


def _json_rows(text: str, path: Path) -> list[dict]:
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"annotations are not valid JSON: {_json_problem(e)} ({path}:{e.lineno})") from None
        # Text that starts with `[` and parses is a list: a list followed by more text is a JSONDecodeError.
        _raise_listed(
            [
                f"{path} #{i + 1}: {_kind(row)}, not an object"
                for i, row in enumerate(rows)
                if not isinstance(row, dict)
            ],
            "annotation row is not a JSON object",
            "annotation rows are not JSON objects",
        )
        return rows
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) > 1:
        try:  # one object written over several lines: say so, rather than call every line malformed
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if whole is not None:
            raise InputError(
                f"annotations are a single JSON value ({_kind(whole)}) over several lines; expected a "
                f"JSON list of rows or one JSON object per line ({path})"
            )
    rows, problems = [], []
    for number, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{number}: {_json_problem(e)}")
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            problems.append(f"{path}:{number}: {_kind(row)}, not an object")
    _raise_listed(problems, "annotation line is not a JSON object", "annotation lines are not JSON objects")
    return rows


def _csv_rows(text: str, path: Path) -> list[dict]:
    # strict: a file cut inside a quoted caption is an error here, not a row with a mangled caption
    reader = csv.reader(text.splitlines(keepends=True), strict=True)
    header, rows, problems = None, [], []
    while True:
        first_line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            reason = (
                "the file ends inside a quoted field" if "unexpected end of data" in str(e) else f"not valid CSV: {e}"
            )
            raise InputError(f"annotations: {reason} ({path}:{first_line})") from None
        if not fields:  # a blank line
            continue
        if header is None:
            header = [name.strip() for name in fields]
        elif len(fields) != len(header):
            problems.append(f"{path}:{first_line}: {len(fields)} field{'s' if len(fields) != 1 else ''}")
        else:
            rows.append(dict(zip(header, fields)))
    width = f"the header's {len(header or ())} fields"
    _raise_listed(problems, f"CSV row does not have {width}", f"CSV rows do not have {width}")
    return rows


def _raise_listed(problems: list[str], one: str, several: str) -> None:
    """One InputError for all the problems of a file: how many, and the first MAX_LISTED of them."""
    if not problems:
        return
    raise InputError(f"{len(problems)} {one if len(problems) == 1 else several} ({listing(problems, MAX_LISTED)})")


def _kind(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _lower(message: str) -> str:
    return message[:1].lower() + message[1:]


def _json_problem(e: json.JSONDecodeError) -> str:
    # json's own messages: "Expecting ',' delimiter", "Unterminated string starting at"
    message = _lower(e.msg)
    return f"{message} column {e.colno}" if message.endswith(" at") else f"{message} at column {e.colno}"


def columns_of(rows: list[dict]) -> list[str]:
    """Every column some row has, in order of first appearance (JSONL rows may differ)."""
    return list(dict.fromkeys(name for row in rows for name in row))


def pick_field(columns: list[str], given: str | None, candidates: tuple[str, ...], what: str, path: Path) -> str:
    listed = ", ".join(map(str, columns))
    if given:
        if given not in columns:
            raise UsageError(f"--{what}-field {given!r} is not a column of the annotations ({path}; columns: {listed})")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise InputError(
        f"no {what} column found among {', '.join(candidates)}; name it with --{what}-field ({path}; columns: {listed})"
    )


def check_clip_pattern(pattern: str, columns: list[str], path: Path) -> None:
    """Every {field} of --clip-pattern is a column (or {id}): a typo is one line now, not every row dropped."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as e:
        raise UsageError(f"--clip-pattern {pattern!r} is not a valid pattern: {_lower(str(e))}") from None
    for name in names:
        field = name.split(".")[0].split("[")[0]
        if field == "" or field.isdigit():
            raise UsageError(f"--clip-pattern {pattern!r}: every {{}} must name a column, e.g. {{id}} or {{page_dir}}")
        if field != "id" and field not in columns:
            raise UsageError(
                f"--clip-pattern {pattern!r} names {{{field}}}, which is not a column of the annotations "
                f"({path}; columns: {', '.join(map(str, columns))})"
            )


# ------------------------------------------------------------------------------------------ clips
def check_clip(args: tuple[str, int]) -> str | None:
    """None when the clip decodes, else the reason it does not."""
    path, num_frames = args
    try:
        read_video_frames(path, num_frames)
    except VideoReadError as e:
        return str(e)
    return None


def check_video_folder(folder: Path) -> None:
    if not folder.exists():
        raise InputError(f"video folder not found ({folder})")
    if not folder.is_dir():
        raise InputError(f"video folder is a file, not a folder ({folder})")


def write_outputs(outputs: dict[Path, str]) -> None:
    """Writes every file beside its final name, then renames them all: a full disk leaves the previous
    outputs (or none) in place, never a cut-short JSON file that training would stumble on later."""
    written = []
    try:
        for path, text in outputs.items():
            data = text.encode("utf-8")
            partial = path.with_name(path.name + ".partial")
            written.append(partial)
            with errors.saving(str(path), "the prepared annotations", needed=len(data)):
                partial.write_bytes(data)
        for path in outputs:
            os.replace(path.with_name(path.name + ".partial"), path)
    finally:
        for partial in written:
            partial.unlink(missing_ok=True)


def nothing_kept(rows: int, dropped: list[dict], listing: Path) -> InputError:
    """Every row dropped: training would fail on the empty file, so say why here, by reason."""
    kinds = Counter(_drop_kind(d) for d in dropped)
    parts = []
    for kind, count in kinds.most_common():
        example = next((d["path"] for d in dropped if _drop_kind(d) == kind and "path" in d), None)
        parts.append(f"{count} {kind}" + (f", e.g. {example}" if example else ""))
    which = "the only row" if rows == 1 else f"none of the {rows} rows"
    verb = "has no" if rows == 1 else "has a"
    return InputError(f"{which} {verb} usable clip: {'; '.join(parts)} (every row and its reason: {listing})")


def _drop_kind(entry: dict) -> str:
    return entry["reason"] if entry["reason"] in NOT_DECODED else "unreadable clip"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None) -> int:
    parser = errors.ArgumentParser(
        prog="python scripts_italian/prepare_webvid_italian.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--annotations", required=True, type=Path, help="CSV or JSONL annotation file")
    parser.add_argument("--video-folder", required=True, type=Path, help="folder of the downloaded clips")
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--id-field")
    parser.add_argument("--caption-field")
    parser.add_argument(
        "--clip-pattern",
        default="{id}.mp4",
        help="clip path under --video-folder, filled with the row's fields and {id}",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="human turn of each video sample (must hold <video>)")
    parser.add_argument("--num-frames", type=_positive_int, default=8, help="frames decoded per clip when checking it")
    parser.add_argument("--workers", type=_positive_int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--no-check", action="store_true", help="only check that clip files exist (no decoding)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if "<video>" not in args.prompt:
        raise UsageError(f"--prompt {args.prompt!r} has no <video> placeholder")
    # Everything that can be checked without decoding is checked first: no clip is decoded for a run
    # that could not write its result.
    errors.check_writable(str(args.out_dir), "--out-dir")
    check_video_folder(args.video_folder)
    rows = read_annotations(args.annotations)
    columns = columns_of(rows)
    id_field = pick_field(columns, args.id_field, ID_FIELDS, "id", args.annotations)
    caption_field = pick_field(columns, args.caption_field, CAPTION_FIELDS, "caption", args.annotations)
    check_clip_pattern(args.clip_pattern, columns, args.annotations)

    candidates, dropped = [], []
    for row in rows:
        clip_id = "" if row.get(id_field) is None else str(row[id_field]).strip()
        caption = " ".join(str(row.get(caption_field) or "").split())
        if not clip_id or not caption:
            dropped.append({"id": clip_id, "reason": "no clip id" if not clip_id else "no caption"})
            continue
        try:
            relative = args.clip_pattern.format(**{**row, "id": clip_id})
        except (KeyError, AttributeError, IndexError, ValueError) as e:  # a JSONL row without a field the pattern uses
            dropped.append({"id": clip_id, "reason": CLIP_PATTERN_UNFIT, "detail": f"{type(e).__name__}: {e}"})
            continue
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
        video_samples.append(
            {"id": clip_id, "video": relative, "conversations": [{"from": "human", "value": args.prompt}, answer]}
        )
        text_samples.append({"id": clip_id, "conversations": [answer]})

    with errors.saving(str(args.out_dir), "the prepared annotations"):
        args.out_dir.mkdir(parents=True, exist_ok=True)
    listing = args.out_dir / "dropped.jsonl"
    write_outputs(
        {
            args.out_dir / "train_video.json": json.dumps(video_samples, ensure_ascii=False, indent=1),
            args.out_dir / "train_text.json": json.dumps(text_samples, ensure_ascii=False, indent=1),
            listing: "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in dropped),
        }
    )
    if not video_samples:
        raise nothing_kept(len(rows), dropped, listing)
    unreadable = sum(1 for e in dropped if e["reason"] not in NOT_DECODED)
    logger.info(
        "%d rows: %d clips kept; dropped %d (%d unreadable), listed in %s",
        len(rows),
        len(video_samples),
        len(dropped),
        unreadable,
        listing,
    )
    return 0


if __name__ == "__main__":
    sys.exit(errors.entry_point(main)())
