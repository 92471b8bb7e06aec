"""Two ranks in step: batches left empty by unreadable clips and batches of different modalities on
different ranks train under DDP, ZeRO-2 and ZeRO-3 with the losses of a one-process run of the same
micro-batches; skips are counted once per sample over every rank; a killed rank ends the job."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from llava.constants import IGNORE_INDEX
from llava.demo.synthetic import ClipSpec, render_frames, save_gpt2
from llava.train import cache_features
from llava.train.skipped_samples import SKIPPED_FILE, SkipTracker

from model_helpers import clip, llava_model, prompt, right_padded
from train_helpers import ROOT, logged_losses, make_assets, run_training, train_args

# The launcher train_italian_video.sh runs: torchrun, whose failure ends in one line.
TORCHRUN = [sys.executable, "-m", "llava.train.launch", "--standalone"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_job(args, nproc: int, **streams) -> subprocess.Popen:
    """train.py under torchrun, in a session of its own so that the whole job (workers too) can be killed."""
    command = [*TORCHRUN, "--nproc_per_node", str(nproc), "-m", "llava.train.train", *args]
    return subprocess.Popen(command, cwd=ROOT, env=ENV, text=True, start_new_session=True, **streams)


def kill_job(job: subprocess.Popen) -> None:
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def run_job(args, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs a job to its end; one that outlives `timeout` (a hang) is killed and fails the test."""
    job = start_job(args, nproc, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        _, err = job.communicate()
        pytest.fail(f"the job was still running after {timeout} s: {err[-3000:]}")
    return subprocess.CompletedProcess(job.args, job.returncode, out, err)


# ------------------------------------------------------------------------------------- the model
@pytest.mark.slow
def test_stand_ins_leave_every_sequence_alone_and_give_the_visual_modules_exact_zero_gradients(tmp_path, tower_dir):
    _, model = llava_model("llava_gpt2", tmp_path / "lm", tower_dir)
    model.get_vision_tower().requires_grad_(True)  # a trainable tower takes part too
    text_ids, text_mask = right_padded([[5, 6, 7, 8], [9, 10]])
    text_labels = text_ids.masked_fill(text_mask == 0, IGNORE_INDEX)
    video_ids, video_mask = right_padded([prompt(3, None, 4, 5), [6, 7, 8]])
    video_labels = video_ids.masked_fill((video_mask == 0) | (video_ids < 0), IGNORE_INDEX)
    video = [clip(8)]
    stand_ins = model.visual_stand_ins([1, 4], through_tower=True)  # frame counts this batch lacks

    def run(ids, mask, labels, **visual):
        model.zero_grad(set_to_none=True)
        out = model(input_ids=ids, attention_mask=mask, labels=labels, **visual)
        out.loss.backward()
        return out, {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}

    # what a batch with a clip trains: the stand-ins make a text-only batch train the same parameters
    _, video_grads = run(video_ids, video_mask, video_labels, images=video)
    used = {name for name, grad in video_grads.items() if grad is not None}
    batches = [(text_ids, text_mask, text_labels, {}), (video_ids, video_mask, video_labels, {"images": video})]
    for ids, mask, labels, visual in batches:
        plain, plain_grads = run(ids, mask, labels, **visual)
        standing, grads = run(ids, mask, labels, **visual, visual_stand_ins=stand_ins)
        # every sample's own positions (padding aside) and the loss, bit for bit
        real = mask.bool() if "images" not in visual else torch.ones(standing.logits.shape[:2], dtype=torch.bool)
        assert torch.equal(standing.logits[real], plain.logits[real]) and torch.equal(standing.loss, plain.loss)
        assert {name for name, grad in grads.items() if grad is not None} == used
        for name in used:
            if plain_grads[name] is not None:
                assert torch.allclose(grads[name], plain_grads[name], rtol=0, atol=1e-7), name
            else:  # the text-only batch: the visual modules take part, with gradients of exactly zero
                assert ".vision_" in name or ".mm_" in name, name
                assert not grads[name].any(), name


# ---------------------------------------------------------------------------------- skip counting
def skip(index, sample_id):
    return {"index": index, "id": sample_id, "path": "broken.mp4", "reason": "unreadable"}


def test_skips_are_counted_per_sample_listed_once_and_not_again_after_a_restart(tmp_path):
    tracker = SkipTracker(str(tmp_path), dataset_size=10, max_fraction=0.5)
    tracker.note([skip(3, "same-clip"), skip(4, "same-clip")])  # two samples that share a clip id
    tracker.note([skip(3, "same-clip")])  # the same sample met again
    tracker.sync()
    assert tracker.count == 2
    listed = tmp_path / SKIPPED_FILE
    with open(listed, "a") as f:
        f.write('{"index": 7, "id": "cut')  # a crash in the middle of a line
    restarted = SkipTracker(str(tmp_path), dataset_size=10, max_fraction=0.5)
    assert restarted.count == 2
    restarted.note([skip(4, "same-clip"), skip(7, "cut")])
    restarted.sync()
    entries = [json.loads(line) for line in listed.read_text().splitlines() if line.endswith("}")]
    assert [(e["index"], e["id"]) for e in entries] == [(3, "same-clip"), (4, "same-clip"), (7, "cut")]
    assert restarted.count == 3

    restarted.note([skip(8, "x"), skip(9, "y")])
    with pytest.raises(RuntimeError, match=r"5 of 10 samples \(50.0%\) could not be read, more than the allowed 40.0%"):
        restarted.max_fraction = 0.4
        restarted.sync()


# ------------------------------------------------------------------------------- two-rank runs
CACHED = (4, 5, 7)  # the training clips read from the feature cache


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("assets")
    assets = make_assets(folder, num_train=12, num_val=0)
    # Without dropout, a micro-batch's loss depends only on the weights: two ranks and one process
    # that runs the same micro-batches one after the other give the same per-step losses.
    assets["gpt2"] = save_gpt2(folder / "gpt2-no-dropout", folder / "tokenizer", n_positions=256, dropout=0.0)
    images = folder / "images"
    images.mkdir()
    Image.fromarray(render_frames(ClipSpec("rosso", "cerchio", "destra"), num_frames=1, size=64)[0]).save(
        images / "still.png"
    )
    assets["image_folder"] = str(images)
    broken = Path(assets["video_folder"]) / "broken"
    broken.mkdir()
    (broken / "empty.mp4").write_bytes(b"")
    (broken / "text.mp4").write_text("this is not a video\n")
    # Some clips come from the feature cache (no tower), the others are pixels (the tower runs).
    videos = json.loads(Path(assets["train"]).read_text())
    cached = folder / "cached.json"
    cached.write_text(json.dumps([videos[i] for i in CACHED]))
    assets["feature_cache"] = str(folder / "features")
    cache_features.main(
        [
            "--vision_tower",
            assets["tower"],
            "--data_path",
            str(cached),
            "--video_folder",
            assets["video_folder"],
            "--num_frames",
            "8",
            "--feature_cache",
            assets["feature_cache"],
            "--dataloader_num_workers",
            "0",
        ]
    )
    return assets


def caption_only(sample, new_id):
    return {"id": new_id, "conversations": sample["conversations"][1:]}


def ranked_data(assets, folder) -> str:
    """20 samples in batches of 2; with the sequential sampler, batch k goes to rank k % 2, and step s
    runs batches 2s-2 (rank 0) and 2s-1 (rank 1). One process with 2 accumulation steps runs the same."""
    videos = json.loads(Path(assets["train"]).read_text())
    text = [caption_only(s, f"text-{i}") for i, s in enumerate(videos)]
    answer = {"from": "gpt", "value": "un cerchio rosso"}

    def broken(name):
        return {
            "id": "same-clip" if name == "empty.mp4" else "bad",
            "video": f"broken/{name}",
            "conversations": [{"from": "human", "value": "<video>\n"}, answer],
        }

    image = {"id": "still", "image": "still.png", "conversations": [{"from": "human", "value": "<image>\n"}, answer]}
    samples = [
        videos[0],
        videos[1],
        broken("empty.mp4"),
        broken("empty.mp4"),  # step 1: video | empty (two samples, one clip id)
        videos[2],
        videos[3],
        text[0],
        text[1],  # step 2: video | text only
        image,
        text[2],
        videos[4],
        videos[5],  # step 3: image + text | videos from the cache
        videos[6],
        text[3],
        videos[7],
        broken("text.mp4"),  # step 4: video + text | cached video + unreadable
        text[4],
        text[5],
        text[6],
        text[7],  # step 5: text only on both
    ]
    path = Path(folder) / "ranked.json"
    path.write_text(json.dumps(samples))
    return str(path)


def ranked_args(assets, out, data, *extra):
    return train_args(
        assets,
        out,
        "--image_folder",
        assets["image_folder"],
        "--feature_cache",
        assets["feature_cache"],
        "--per_device_train_batch_size",
        "2",
        "--train_sampling_strategy",
        "sequential",
        "--max_skip_fraction",
        "0.2",
        *extra,
        steps=5,
        data=data,
    )


# DDP with activation checkpointing, as LLaVA's scripts run: the Trainer then turns find_unused_parameters
# off, and DDP needs every trainable parameter in every step, step 5 (text only on both ranks) included.
STAGES = {
    "ddp": ["--gradient_checkpointing", "True"],
    "zero2": ["--deepspeed", str(ROOT / "scripts" / "zero2.json")],
    "zero3": ["--deepspeed", str(ROOT / "scripts" / "zero3.json")],
}


@pytest.fixture(scope="module")
def one_process_losses(assets, tmp_path_factory):
    """Per-step losses of one process running the same micro-batches (2 accumulation steps): without
    DeepSpeed (the reference of DDP and ZeRO-2), and under ZeRO-3 (whose first loss already differs from
    a run without DeepSpeed: it starts from other weights)."""
    folder = tmp_path_factory.mktemp("one_process")
    data = ranked_data(assets, folder)
    losses = {}
    for name, stage in (("plain", []), ("zero3", STAGES["zero3"])):
        out = folder / name
        args = ranked_args(assets, out, data, "--gradient_accumulation_steps", "2", *stage)
        result = run_job(args, nproc=1) if stage else run_training(args, env=ENV)
        assert result.returncode == 0, result.stderr[-3000:]
        losses[name] = logged_losses(out)
    return losses


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("stage", list(STAGES))
def test_two_ranks_stay_in_step_through_empty_and_mixed_modality_batches(stage, assets, one_process_losses, tmp_path):
    out = tmp_path / stage
    data = ranked_data(assets, tmp_path)
    start = time.perf_counter()
    result = run_job(ranked_args(assets, out, data, *STAGES[stage]))
    print(f"{stage}: two ranks, 5 steps, {time.perf_counter() - start:.1f} s")
    assert result.returncode == 0, result.stderr[-4000:]
    expected = one_process_losses["zero3" if stage == "zero3" else "plain"]
    assert logged_losses(out) == pytest.approx(expected, rel=1e-4)
    listed = [json.loads(line) for line in (out / SKIPPED_FILE).read_text().splitlines()]
    # every unreadable sample once, the two that share a clip id as two
    assert [(e["index"], e["id"]) for e in listed] == [(2, "same-clip"), (3, "same-clip"), (15, "bad")]
    assert "final model saved" in result.stderr and "(3 clips skipped)" in result.stderr
    assert ": 3 of 12 samples with media are cached" in result.stderr  # the tower runs on some ranks only


@pytest.mark.slow
@pytest.mark.distributed
def test_the_skip_limit_counts_every_rank_and_stops_them_all(assets, tmp_path):
    videos = json.loads(Path(assets["train"]).read_text())
    bad = {"id": "bad", "video": "broken/empty.mp4", "conversations": videos[0]["conversations"]}
    # rank 0's first batch and rank 1's second are unreadable: 2 of 16 each (12.5%), 4 (25%) together
    samples = [bad, bad, *videos[:4], bad, bad, *videos[4:12]]
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(samples))
    out = tmp_path / "out"
    args = ranked_args(assets, out, str(data), "--max_skip_fraction", "0.15")
    result = run_job(args)
    assert result.returncode != 0
    assert "4 of 16 samples (25.0%) could not be read, more than the allowed 15.0%" in result.stderr
    # said once, in one line, by rank 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "could not be read" in errors[0], result.stderr[-3000:]
    # no rank's traceback (torchrun prints its own summary, naming the failed ranks)
    assert "llava/train/" not in "".join(
        line for line in result.stderr.splitlines() if line.lstrip().startswith("File ")
    )
    # every rank stopped at the same point: none went on into a collective that the others had left
    assert not any(s in result.stderr for s in ("mismatch", "Connection reset", "Connection closed"))
    listed = [json.loads(line)["index"] for line in (out / SKIPPED_FILE).read_text().splitlines()]
    assert listed == [0, 1, 6, 7]


def _worker_of_rank(launcher_pid: int, rank: int) -> int | None:
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            with open(f"/proc/{pid}/status") as f:
                parent = next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except (OSError, StopIteration):
            continue
        if parent == launcher_pid and f"RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.mark.slow
@pytest.mark.distributed
def test_a_killed_rank_ends_the_job_and_is_named(assets, tmp_path):
    out = tmp_path / "out"
    args = train_args(assets, out, *STAGES["zero2"], "--per_device_train_batch_size", "2", steps=1000)
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:
        job = start_job(args, 2, stdout=log, stderr=subprocess.STDOUT)
        try:
            while "'loss'" not in log_path.read_text():  # training is under way
                assert job.poll() is None, log_path.read_text()[-3000:]
                time.sleep(0.5)
            victim = _worker_of_rank(job.pid, 1)
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            returncode = job.wait(timeout=120)  # the bound: far above the seconds it takes
        finally:
            kill_job(job)
    output = log_path.read_text()
    assert returncode == 1
    # the job's last line names the rank and the cause; no traceback of the launcher's
    assert output.rstrip().splitlines()[-1] == (
        f"error: rank 1 ({socket.gethostname()}) was killed by signal 9 (SIGKILL; the kernel's out-of-memory killer sends it too)"
    ), output[-3000:]
    assert "ChildFailedError" not in output and "Root Cause" not in output, output[-3000:]
