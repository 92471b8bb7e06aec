"""`python -m llava.eval.babylm export RUN_DIR OUT_DIR`: a training run's word milestones and final model
as folders the 2025 BabyLM pipeline evaluates under the revision names its `collate_preds` reads.

    OUT_DIR/chck_1M/NAME, OUT_DIR/chck_2M/NAME, ..., OUT_DIR/chck_1000M/NAME, OUT_DIR/main/NAME

The pipeline names results by the model folder's name (`Path(model_path).stem`) and `--revision_name`,
and `from_pretrained` ignores a revision for a local folder: so each revision is a folder of its own,
every one ending in the same NAME (the run folder's name unless `--name`). A milestone the challenge does
not define (the demo's 100 to 100,000 words) is `words_<label>` (`words_100`, `words_100000`).

A checkpoint with a vision tower becomes a self-contained folder with its code (llava.eval.export_remote):
`AutoModelForCausalLM` and `AutoProcessor` load it with `trust_remote_code=True` where this package is not
installed, for the text tasks and the image tasks alike; the tower's weights are kept once in
OUT_DIR/.shared-weights and hard-linked into every revision. A text-only checkpoint (or any, with
`--text_only`) becomes its family's stock transformers model with its tokenizer (llava.eval.export_lm),
which loads without remote code. OUT_DIR/revisions.tsv lists revision, folder, words and source
checkpoint; a folder already exported from the same checkpoint the same way is kept (a rerun exports only
what is new). OUT_DIR/upload_to_hub.sh USER/NAME puts the revisions on the Hugging Face hub as the
pipeline reads them there: a branch per milestone, the final model on main.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ...errors import ArgumentParser, InputError, saving
from ..curves import FINAL, MILESTONE_PREFIX, run_checkpoints

logger = logging.getLogger("llava.eval.babylm")

# The revisions the pipeline's collate_preds reads: every 1M words to 10M, every 10M to 100M, every 100M
# to 1B (written chck_1000M).
MILLION = 1_000_000
CHALLENGE_WORDS = sorted(
    {n * MILLION for n in range(1, 11)}
    | {n * 10 * MILLION for n in range(1, 11)}
    | {n * 100 * MILLION for n in range(1, 11)}
)
SOURCE_FILE = "exported_from.json"
SHARED_WEIGHTS = ".shared-weights"


def milestone_words(label: str) -> int:
    """The word count a milestone's label names: '1M', '1B', '100000'."""
    for suffix, unit in (("B", 1_000_000_000), ("M", MILLION)):
        if label.endswith(suffix) and label[:-1].isdigit():
            return int(label[:-1]) * unit
    if label.isdigit():
        return int(label)
    raise InputError(f"{MILESTONE_PREFIX}{label}: not a word milestone's name")


def revision_name(checkpoint_name: str) -> str:
    """'main' for the final model, chck_<n>M for the challenge's milestones, words_<label> for others."""
    if checkpoint_name == FINAL:
        return "main"
    label = checkpoint_name.removeprefix(MILESTONE_PREFIX)
    words = milestone_words(label)
    return f"chck_{words // MILLION}M" if words in CHALLENGE_WORDS else f"words_{label}"


def export_kind(checkpoint: str, text_only: bool) -> str:
    """'remote_code' (the whole model, with its code) for a checkpoint with a vision tower, else 'stock_lm'."""
    from ...model.model_folder import config_file_of, is_llava_checkpoint, read_config

    config = read_config(config_file_of(checkpoint, "a checkpoint"), "a checkpoint")
    return "remote_code" if is_llava_checkpoint(config) and not text_only else "stock_lm"


def export_run(run_dir: str, out_dir: str, name: str | None = None, text_only: bool = False) -> list[dict]:
    """Exports every finished checkpoint of the run; returns one row per revision."""
    from .. import export_lm, export_remote

    checkpoints = run_checkpoints(run_dir)
    if not checkpoints:
        raise InputError(
            f"{run_dir}: no finished word milestone and no final model (train with --babylm_word_milestones)"
        )
    name = name or Path(os.path.abspath(run_dir)).name
    rows = []
    for checkpoint in checkpoints:
        revision = revision_name(checkpoint.name)
        folder = Path(out_dir) / revision / name
        kind = export_kind(checkpoint.path, text_only)
        source = {"checkpoint": os.path.abspath(checkpoint.path), "words": checkpoint.words, "as": kind}
        if _exported_from(folder) == source:
            logger.info("%s: already exported from %s", folder, checkpoint.path)
        else:
            # Written beside and renamed into place: a stopped export leaves no half folder behind.
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            if kind == "remote_code":
                export_remote.export(checkpoint.path, str(partial), shared_dir=str(Path(out_dir) / SHARED_WEIGHTS))
            else:
                export_lm.export(checkpoint.path, str(partial))
            (partial / SOURCE_FILE).write_text(json.dumps(source))
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
            logger.info("%s -> %s", checkpoint.path, folder)
        rows.append(
            {"revision": revision, "folder": str(folder), "words": checkpoint.words, "checkpoint": checkpoint.path}
        )
    table = "revision\tfolder\twords\tcheckpoint\n" + "".join(
        f"{r['revision']}\t{r['folder']}\t{r['words']}\t{r['checkpoint']}\n" for r in rows
    )
    with saving(str(Path(out_dir) / "revisions.tsv"), "the revisions table", needed=len(table)):
        (Path(out_dir) / "revisions.tsv").write_text(table)
        write_upload_script(Path(out_dir), name, rows)
    return rows


UPLOAD_SCRIPT = "upload_to_hub.sh"


def write_upload_script(out_dir: Path, name: str, rows: list[dict]) -> None:
    """OUT_DIR/upload_to_hub.sh REPO_ID: the hub layout the pipeline's `--revision_name` reads, a branch per
    revision (`hf upload` creates it) and the final model on main, uploaded last: a branch starts from
    main's files, so main must not hold a model yet when the milestones' branches are made."""
    lines = [
        "#!/usr/bin/env bash",
        f"# Uploads the revisions of {name} to the Hugging Face hub: bash {UPLOAD_SCRIPT} USER/{name}",
        "# (needs huggingface_hub's `hf` command and a token with write access: hf auth login).",
        "set -euo pipefail",
        "REPO=${1:?usage: bash upload_to_hub.sh USER/NAME}",
        'cd "$(dirname "${BASH_SOURCE[0]}")"',
    ]
    ordered = [r for r in rows if r["revision"] != "main"] + [r for r in rows if r["revision"] == "main"]
    for row in ordered:
        branch = "" if row["revision"] == "main" else f" --revision {row['revision']}"
        lines.append(f'hf upload "$REPO" {row["revision"]}/{name} .{branch} --exclude {SOURCE_FILE}')
    path = out_dir / UPLOAD_SCRIPT
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)


def _exported_from(folder: Path) -> dict | None:
    try:
        return json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> list[dict]:
    parser = ArgumentParser(prog="python -m llava.eval.babylm export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run's --output_dir")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="where the revision folders go")
    parser.add_argument("--name", help="the model folder's name in every revision (default: RUN_DIR's name)")
    parser.add_argument(
        "--text_only",
        action="store_true",
        help="export the language model alone, as its family's stock class (no remote code; no image tasks)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = export_run(args.run_dir, args.out_dir, args.name, args.text_only)
    for row in rows:
        print(f"{row['revision']}\t{row['folder']}")
    return rows
