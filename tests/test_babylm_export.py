"""`python -m llava.eval.babylm export RUN_DIR OUT_DIR` lays a run's milestones out under the revision names
of the 2025 BabyLM pipeline (chck_1M ... chck_1000M, main), every revision's folder with the same name, so
that `zero_shot` (and the pipeline) write results where the pipeline's collate_preds reads them."""

import json
import shutil
import subprocess

import pytest
from transformers import AutoModelForCausalLM

from llava.eval import export_remote
from llava.eval.babylm import export, zero_shot

from babylm_helpers import write_task_folders


@pytest.mark.parametrize(
    "name, revision",
    [("checkpoint-words-1M", "chck_1M"), ("checkpoint-words-10M", "chck_10M"), ("checkpoint-words-20M", "chck_20M"),
     ("checkpoint-words-100M", "chck_100M"), ("checkpoint-words-300M", "chck_300M"), ("checkpoint-words-1B", "chck_1000M"),
     ("checkpoint-words-100", "words_100"), ("checkpoint-words-100000", "words_100000"),
     ("checkpoint-words-15M", "words_15M"), ("checkpoint-words-2B", "words_2B"), ("final", "main")],
)  # fmt: skip
def test_revision_names_are_the_pipelines(name, revision):
    assert export.revision_name(name) == revision


def _fake_run(checkpoint, run, milestones: dict[str, int]):
    """A run folder laid out as training writes one: each milestone a copy of a real checkpoint with its
    word count, the final model at the top."""
    shutil.copytree(checkpoint, run)
    (run / "word_count.json").write_text(json.dumps({"words": max(milestones.values()) + 7}))
    for label, words in milestones.items():
        shutil.copytree(checkpoint, run / f"checkpoint-words-{label}")
        (run / f"checkpoint-words-{label}" / "word_count.json").write_text(json.dumps({"words": words}))


@pytest.mark.slow
def test_a_runs_milestones_become_revision_folders_the_results_follow(checkpoint, tmp_path):
    run = tmp_path / "run-text-seed1"
    _fake_run(checkpoint, run, {"40": 41, "1M": 1_000_012, "1B": 1_000_000_030})
    out = tmp_path / "babylm"
    rows = export.main([str(run), str(out), "--name", "bambi-italian"])
    assert [r["revision"] for r in rows] == ["words_40", "chck_1M", "chck_1000M", "main"]
    towers = set()
    for row in rows:
        folder = out / row["revision"] / "bambi-italian"
        assert row["folder"] == str(folder)
        config = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).config
        assert (
            config.model_type == "llava_gpt2"
            and config.auto_map["AutoModelForCausalLM"] == "auto_classes.LlavaGPT2ForCausalLM"
        )
        towers.add((folder / export_remote.TOWER_SHARD).stat().st_ino)
    # The frozen tower is stored once: every revision's shard is a hard link to the one kept file.
    (kept,) = (out / export.SHARED_WEIGHTS).iterdir()
    assert towers == {kept.stat().st_ino} and kept.stat().st_nlink == len(rows) + 1
    table = (out / "revisions.tsv").read_text().splitlines()
    assert table[0] == "revision\tfolder\twords\tcheckpoint" and table[2].startswith("chck_1M\t")

    # The hub layout: a branch per milestone, main last (a new branch starts from main's files).
    script = (out / "upload_to_hub.sh").read_text().splitlines()
    uploads = [line for line in script if line.startswith("hf upload")]
    assert uploads == [
        'hf upload "$REPO" words_40/bambi-italian . --revision words_40 --exclude exported_from.json',
        'hf upload "$REPO" chck_1M/bambi-italian . --revision chck_1M --exclude exported_from.json',
        'hf upload "$REPO" chck_1000M/bambi-italian . --revision chck_1000M --exclude exported_from.json',
        'hf upload "$REPO" main/bambi-italian . --exclude exported_from.json',
    ]
    assert subprocess.run(["bash", "-n", str(out / "upload_to_hub.sh")]).returncode == 0

    # A rerun exports nothing again: each folder records the checkpoint it came from.
    stamp = (out / "chck_1M" / "bambi-italian" / "config.json").stat().st_mtime_ns
    export.main([str(run), str(out), "--name", "bambi-italian"])
    assert (out / "chck_1M" / "bambi-italian" / "config.json").stat().st_mtime_ns == stamp

    # --text_only: the language model alone, as its family's stock class (no remote code).
    export.main([str(run), str(tmp_path / "text"), "--text_only"])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "text" / "main" / run.name).config.model_type == "gpt2"

    folders = write_task_folders(tmp_path / "data")
    results = tmp_path / "results"
    zero_shot.main(["--model_path_or_name", str(out / "chck_1M" / "bambi-italian"), "--backend", "causal",
                    "--task", "blimp", "--data_path", str(folders["blimp"]), "--revision_name", "chck_1M",
                    "--save_predictions", "--output_dir", str(results)])  # fmt: skip
    # where collate_preds looks for the fast BLiMP predictions of revision chck_1M
    assert (
        results / "bambi-italian" / "chck_1M" / "zero_shot" / "causal" / "blimp" / "blimp_fast" / "predictions.json"
    ).is_file()


def test_a_folder_without_milestones_is_one_line(tmp_path):
    from llava.errors import InputError

    with pytest.raises(InputError, match="no finished word milestone"):
        export.export_run(str(tmp_path), str(tmp_path / "out"))
