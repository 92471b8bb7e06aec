"""Damaged files are found, named and routed around; files are flushed before they become visible.

Checkpoints: a newest checkpoint cut short or with flipped bytes is named with what is wrong, set aside,
and the run resumes from the newest intact one with the losses of an uninterrupted run. Feature cache: a
shard cut short is named when the cache is indexed, an entry with zeroed or flipped bytes when it is
read; their samples take the online path, with the online loss. Flushing is observed by wrapping
os.fsync and os.replace (the real calls still run, on the real filesystem) and checking their order.
"""

import json
import logging
import os
import struct
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from llava.train import cache_features, checkpoints, train
from llava.train.checkpoints import COMPLETE_MARKER, DAMAGE_NOTE, DAMAGED_FOLDER

from train_helpers import ROOT, logged_losses, make_assets, run_training, train_args

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("damage_assets"), num_train=8, num_val=0)


def flip_bytes(path, offset, count=16):
    data = bytearray(Path(path).read_bytes())
    data[offset : offset + count] = bytes(b ^ 0xFF for b in data[offset : offset + count])
    Path(path).write_bytes(bytes(data))


def cut_in_half(path):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def safetensors_data_start(path) -> int:
    """Offset of the first tensor byte (after the 8-byte length and the JSON header)."""
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


@pytest.fixture
def flushes(monkeypatch):
    """Every fsync (by the path of its descriptor) and rename, in the order they happen."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        events.append(("rename", os.path.realpath(src), os.path.realpath(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.mark.slow
def test_damaged_newest_checkpoints_are_named_set_aside_and_the_run_resumes_from_an_intact_one(
    assets, tmp_path, capsys
):
    out = tmp_path / "out"
    train.main(train_args(assets, out, steps=8))  # checkpoints at steps 2, 4, 6, 8
    expected = logged_losses(out)
    newest = out / "checkpoint-8" / "model.safetensors"
    flip_bytes(newest, os.path.getsize(newest) // 2)  # loads without complaint: wrong weights
    cut_in_half(out / "checkpoint-6" / "optimizer.pt")  # a copy cut short, a disk that filled up
    capsys.readouterr()

    train.main(train_args(assets, out, steps=8))
    log = capsys.readouterr().err
    assert f"damaged checkpoint {out}/checkpoint-8: model.safetensors has other bytes than when saved" in log
    assert f"damaged checkpoint {out}/checkpoint-6: optimizer.pt is " in log and "(cut short)" in log
    assert f"resuming from {out}/checkpoint-4" in log
    aside = out / DAMAGED_FOLDER
    assert "optimizer.pt" in (aside / "checkpoint-6" / DAMAGE_NOTE).read_text()
    assert "model.safetensors" in (aside / "checkpoint-8" / DAMAGE_NOTE).read_text()
    assert (aside / "checkpoint-8" / "model.safetensors").exists()  # the evidence is kept
    got = logged_losses(out)
    assert all(abs(got[s] - expected[s]) <= 1e-4 for s in (5, 6, 7, 8)), {
        s: (got[s], expected[s]) for s in (5, 6, 7, 8)
    }
    # The steps trained again were saved anew, intact.
    assert checkpoints.damage(str(out / "checkpoint-8")) is None
    assert checkpoints.newest_complete_checkpoint(str(out)) == str(out / "checkpoint-8")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_agree_on_the_intact_checkpoint_when_one_rank_s_shard_is_damaged(assets, tmp_path):
    # ZeRO-2: each rank saves its own optimizer shard; rank 1's, in the newest checkpoint, is cut short.
    out = tmp_path / "out"
    args = train_args(
        assets, out, "--deepspeed", str(ROOT / "scripts" / "zero2.json"), "--per_device_train_batch_size", "2", steps=6
    )
    first = run_training(args, launcher=TORCHRUN, env={"OMP_NUM_THREADS": "1"})
    assert first.returncode == 0, first.stderr[-4000:]
    expected = logged_losses(out)
    (shard,) = (out / "checkpoint-6").glob("global_step6/*zero_pp_rank_1_*optim_states.pt")
    cut_in_half(shard)

    resumed = run_training(args, launcher=TORCHRUN, env={"OMP_NUM_THREADS": "1"})
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"damaged checkpoint {out}/checkpoint-6: global_step6/{shard.name} is " in resumed.stderr
    assert f"resuming from {out}/checkpoint-4" in resumed.stderr
    got = logged_losses(out)  # the mean over both ranks: a rank resumed from elsewhere would show
    assert all(abs(got[s] - expected[s]) <= 1e-4 for s in (5, 6)), {s: (got[s], expected[s]) for s in (5, 6)}


def write_checkpoint(folder, step, size=1 << 16):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(size))
    (folder / "global_step" / "rank_0").mkdir(parents=True)
    (folder / "global_step" / "rank_0" / "optim_states.pt").write_bytes(os.urandom(size // 2))
    checkpoints.mark_complete(str(folder), step)
    return folder


def test_each_kind_of_damage_is_named_and_old_markers_still_resume(tmp_path):
    out = tmp_path / "out"
    ckpt = write_checkpoint(out / "checkpoint-7", 7)
    manifest = json.loads((ckpt / COMPLETE_MARKER).read_text())
    assert manifest["step"] == 7 and set(manifest["files"]) == {
        "model.safetensors",
        "global_step/rank_0/optim_states.pt",
    }
    assert checkpoints.damage(str(ckpt)) is None

    model, optim = ckpt / "model.safetensors", ckpt / "global_step" / "rank_0" / "optim_states.pt"
    intact = model.read_bytes()
    model.write_bytes(intact + b"\0")
    assert (
        checkpoints.damage(str(ckpt)) == f"model.safetensors is {len(intact) + 1:,} bytes, {len(intact):,} when saved"
    )
    model.write_bytes(intact[:100] + bytes(len(intact) - 100))  # zeroed, same size
    assert "model.safetensors has other bytes than when saved (crc32 " in checkpoints.damage(str(ckpt))
    model.write_bytes(intact)
    optim.unlink()
    assert checkpoints.damage(str(ckpt)) == "global_step/rank_0/optim_states.pt is missing"

    # A marker from before manifests (the step number alone): resumed, unverified.
    old = write_checkpoint(out / "checkpoint-3", 3)
    (old / COMPLETE_MARKER).write_text("3\n")
    cut_in_half(old / "model.safetensors")
    # A marker that is itself damaged is damage.
    garbled = write_checkpoint(out / "checkpoint-9", 9)
    (garbled / COMPLETE_MARKER).write_bytes(bytes(40))
    assert checkpoints.newest_complete_checkpoint(str(out)) == str(old)
    assert (
        "completion marker checkpoint_complete is damaged"
        in (out / DAMAGED_FOLDER / "checkpoint-9" / DAMAGE_NOTE).read_text()
    )
    assert (
        out / DAMAGED_FOLDER / "checkpoint-7" / DAMAGE_NOTE
    ).read_text().strip() == "global_step/rank_0/optim_states.pt is missing"

    # The same step damaged again later is kept beside the first.
    again = write_checkpoint(out / "checkpoint-7", 7)
    (again / "model.safetensors").write_bytes(b"")
    assert checkpoints.newest_complete_checkpoint(str(out)) == str(old)
    assert (out / DAMAGED_FOLDER / "checkpoint-7.2" / DAMAGE_NOTE).exists()


def test_checkpoint_files_reach_the_disk_before_the_marker_appears(tmp_path, flushes):
    out = tmp_path / "out"
    ckpt = write_checkpoint(out / "checkpoint-2", 2)
    marker = str((ckpt / COMPLETE_MARKER).resolve())
    renames = [i for i, e in enumerate(flushes) if e[0] == "rename" and e[2] == marker]
    assert len(renames) == 1, flushes
    shown, partial = renames[0], flushes[renames[0]][1]
    before = {e[1] for e in flushes[:shown] if e[0] == "fsync"}
    files = {str(p.resolve()) for p in ckpt.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER}
    folders = {
        str(ckpt.resolve()),
        str((ckpt / "global_step").resolve()),
        str((ckpt / "global_step" / "rank_0").resolve()),
    }
    assert files | folders | {partial, str(out.resolve())} <= before, sorted(files | folders - before)
    assert ("fsync", str(ckpt.resolve())) in flushes[shown + 1 :]  # the marker's name itself


# -------------------------------------------------------------------------------------- feature cache
def cache_args(assets, cache_dir, *extra):
    return [*train_args(assets, "unused-output"), "--feature_cache", str(cache_dir), *extra]


def shard_of_each_sample(assets, cache_dir) -> dict[int, Path]:
    """Sample index -> the shard holding its clip (one entry per shard), from the shards' own records."""
    samples = json.loads(Path(assets["train"]).read_text())
    index = {os.path.realpath(Path(assets["video_folder"]) / s["video"]): i for i, s in enumerate(samples)}
    found = {}
    for shard in Path(cache_dir).glob("*/shard-*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            (source,) = json.loads(f.metadata()["sources"])
        found[index[source[0]]] = shard
    return found


def build(assets, cache_dir=None):
    """The model and dataset a training run with these flags builds (as tests/test_feature_cache.py)."""
    extra = ("--feature_cache", str(cache_dir)) if cache_dir else ()
    built, _, dataset, collator, _ = train.model_and_data(train.parse_args(train_args(assets, "unused-output", *extra)))
    return built.model.eval(), dataset, collator


@pytest.fixture
def cache_log(tmp_path):
    """The feature cache's messages, from this process and from forked DataLoader workers alike."""
    path = tmp_path / "cache.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.WARNING)
    cache_logger = logging.getLogger("llava.train.feature_cache")
    cache_logger.addHandler(handler)
    yield path
    cache_logger.removeHandler(handler)
    handler.close()


def test_damaged_cache_shards_are_named_once_and_their_samples_take_the_online_path(assets, tmp_path, cache_log):
    cache_dir = tmp_path / "cache"
    cache_features.main(cache_args(assets, cache_dir, "--shard_size_mb", "0", "--dataloader_num_workers", "0"))
    shards = shard_of_each_sample(assets, cache_dir)
    assert sorted(shards) == list(range(8))
    zeroed, flipped, truncated = shards[0], shards[1], shards[2]
    start = safetensors_data_start(zeroed)
    zeroed.write_bytes(zeroed.read_bytes()[:start] + bytes(os.path.getsize(zeroed) - start))
    flip_bytes(flipped, safetensors_data_start(flipped) + 100, count=1)
    cut_in_half(truncated)

    model, online, collator = build(assets)
    _, cached, _ = build(assets, cache_dir)
    assert sorted(cached.cache_keys) == [0, 1, 3, 4, 5, 6, 7]  # the truncated shard is not indexed

    # Two epochs through two DataLoader workers, then reads in this process: one message per shard.
    loader = torch.utils.data.DataLoader(cached, batch_size=4, num_workers=2, collate_fn=collator)
    for _ in range(2):
        assert sum(len(batch["images"]) for batch in loader) == 8
    items = [cached[i] for i in range(8)]
    log = cache_log.read_text()
    for shard, what in (
        (zeroed, "does not match its checksum"),
        (flipped, "does not match its checksum"),
        (truncated, "cannot be read"),
    ):
        lines = [line for line in log.splitlines() if f"damaged feature cache shard {shard}:" in line]
        assert len(lines) == 1 and what in lines[0], log
    assert log.count("damaged feature cache shard") == 3, log

    for i in range(8):
        online_path = i in (0, 1, 2)
        assert (items[i]["pixel_values"] is not None) == online_path and (
            items[i]["patch_features"] is None
        ) == online_path, i
    with torch.no_grad():
        damaged = model(**{k: v for k, v in collator(items[:3]).items() if k != "skipped"}).loss
        reference = model(**{k: v for k, v in collator([online[i] for i in range(3)]).items() if k != "skipped"}).loss
    assert torch.equal(damaged, reference)


def test_shards_without_checksums_are_read_with_one_warning(assets, tmp_path, cache_log):
    cache_dir = tmp_path / "cache"
    cache_features.main(cache_args(assets, cache_dir, "--shard_size_mb", "0", "--dataloader_num_workers", "0"))
    for shard in list(shard_of_each_sample(assets, cache_dir).values())[:2]:  # as written before checksums
        with safe_open(str(shard), framework="pt") as f:
            tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - not iterable
        save_file(tensors, str(shard), metadata={"sources": metadata["sources"]})
    _, cached, _ = build(assets, cache_dir)
    assert len(cached.cache_keys) == 8 and all(cached[i]["patch_features"] is not None for i in range(8))
    log = cache_log.read_text()
    assert log.count("2 of 8 shards were written without checksums") == 1 and "damaged" not in log, log


def test_shards_reach_the_disk_before_they_are_renamed_into_place(assets, tmp_path, flushes):
    data = tmp_path / "two.json"
    data.write_text(json.dumps(json.loads(Path(assets["train"]).read_text())[:2]))
    cache_dir = tmp_path / "cache"
    args = [
        *train_args(assets, "unused-output", data=str(data)),
        "--feature_cache",
        str(cache_dir),
        "--shard_size_mb",
        "0",
        "--dataloader_num_workers",
        "0",
    ]
    cache_features.main(args)
    written = sorted(str(p.resolve()) for p in cache_dir.glob("*/shard-*.safetensors")) + [
        str(p.resolve()) for p in cache_dir.glob("*/manifest.json")
    ]
    assert len(written) == 3
    for final in written:
        (shown,) = [i for i, e in enumerate(flushes) if e[0] == "rename" and e[2] == final]
        partial = flushes[shown][1]
        assert ("fsync", partial) in flushes[:shown], (final, flushes)
        assert ("fsync", os.path.dirname(final)) in flushes[shown + 1 :], (final, flushes)
