"""The feature cache on real clips and images: `cache_features` writes it, training reads it.

Cached samples must give the online loss (within 16-bit rounding) without decoding or running the
tower; media missing from the cache, changed since, or unreadable take the online path; a different
tower or layer never reads another's features.
"""

import errno
import hashlib
import json
import pickle
import re
import shutil
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from torch.utils.data import DataLoader

import llava.data.media as media_module
import llava.train.feature_cache as feature_cache_module
from llava.demo.synthetic import ClipSpec, render_frames, write_clip
from llava.modeling.vision_tower import VisionTower
from llava.train import cache_features, train
from llava.train.feature_cache import FeatureCache, describe_tower, weights_digest

from entry_points import run_cli
from media_helpers import write_broken_inputs
from train_helpers import logged_losses, make_assets, train_args, train_tiny_checkpoint


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("cache_assets"), num_train=12, num_val=0)


def cache_args(assets, cache_dir, data=None, *extra):
    # The training command line itself: flags that do not concern caching are ignored by cache_features.
    return [
        *train_args(assets, "unused-output", data=data),
        "--feature_cache",
        str(cache_dir),
        "--dataloader_num_workers",
        "0",
        *extra,
    ]


def build(assets, cache_dir=None, data=None):
    """The model and dataset a training run with these flags builds."""
    extra = ("--feature_cache", str(cache_dir)) if cache_dir else ()
    args = train.parse_args(train_args(assets, "unused-output", *extra, data=data))
    built, _, dataset, collator, _ = train.model_and_data(args)
    return built.model.eval(), dataset, collator


def count_tower_calls(model):
    calls = []
    model.get_vision_tower().register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_cached_loss_equals_online_without_decoding_or_tower(assets, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    summary = cache_features.main(cache_args(assets, cache_dir))
    assert summary["computed"] == 12 and summary["unreadable"] == 0

    model, online, collator = build(assets)
    _, cached, _ = build(assets, cache_dir)
    assert len(cached.cache_keys) == len(cached) == 12

    online_batch = collator([online[i] for i in range(4)])
    tower_calls = count_tower_calls(model)
    with torch.no_grad():
        online_loss = model(**{k: v for k, v in online_batch.items() if k != "skipped"}).loss
    assert tower_calls == [1]

    # The cached path must neither decode nor run the tower.
    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached sample was decoded")

    monkeypatch.setattr(media_module, "read_video_frames", no_decoding)  # what load_pixels decodes with
    cached_batch = collator([cached[i] for i in range(4)])
    assert all(isinstance(entry, dict) for entry in cached_batch["images"])
    with torch.no_grad():
        cached_loss = model(**{k: v for k, v in cached_batch.items() if k != "skipped"}).loss
    assert tower_calls == [1]

    # The stored grids are the tower's output rounded to 16 bits.
    with torch.no_grad():
        grid = model.get_vision_tower()(online_batch["images"][0])
    stored = cached_batch["images"][0]["patch_features"]
    assert stored.dtype == torch.float16 and stored.shape == grid.shape
    assert torch.allclose(stored.float(), grid, rtol=2e-3, atol=1e-3)
    assert abs(cached_loss.item() - online_loss.item()) <= 1e-3 * abs(online_loss.item())


@pytest.mark.slow
def test_training_with_the_cache_logs_the_online_losses(assets, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_features.main(cache_args(assets, cache_dir))
    online, cached = tmp_path / "online", tmp_path / "cached"
    train.main(train_args(assets, online, "--save_steps", "1000", steps=3))
    train.main(train_args(assets, cached, "--save_steps", "1000", "--feature_cache", str(cache_dir), steps=3))
    a, b = logged_losses(online), logged_losses(cached)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert abs(a[step] - b[step]) <= 2e-3 * abs(a[step]), (step, a[step], b[step])


def test_missing_changed_and_unreadable_media_take_the_online_path(assets, tmp_path):
    # A copy of the clips, so that one can be rewritten; an image sample and a broken clip beside them.
    videos = tmp_path / "videos"
    shutil.copytree(assets["video_folder"], videos)
    samples = json.loads(Path(assets["train"]).read_text())[:6]
    broken = write_broken_inputs(tmp_path / "broken", videos / samples[0]["video"])
    Image.fromarray(render_frames(ClipSpec("rosso", "cerchio", "destra"), 1, 64)[0]).save(tmp_path / "still.png")
    conversation = samples[0]["conversations"]
    samples.append({"id": "image", "image": str(tmp_path / "still.png"), "conversations": conversation})
    samples.append({"id": "broken", "video": str(broken["truncated.mp4"]), "conversations": conversation})
    full = tmp_path / "full.json"
    full.write_text(json.dumps(samples))
    subset = tmp_path / "subset.json"  # the first three clips and the image
    subset.write_text(json.dumps(samples[:3] + samples[6:]))
    local = {**assets, "video_folder": str(videos)}

    cache_dir = tmp_path / "cache"
    summary = cache_features.main(cache_args(local, cache_dir, str(subset)))
    assert (summary["computed"], summary["unreadable"]) == (4, 1)
    again = cache_features.main(cache_args(local, cache_dir, str(full)))
    assert (again["computed"], again["present"], again["unreadable"]) == (3, 4, 1)  # only the new clips

    # Rewrite one cached clip: new content, new entry, so it is read online.
    write_clip(videos / samples[1]["video"], render_frames(ClipSpec("blu", "quadrato", "sinistra"), 16, 64, seed=7))
    model, dataset, collator = build(local, cache_dir, str(full))
    assert set(dataset.cache_keys) == {0, 2, 3, 4, 5, 6}
    items = [dataset[i] for i in range(len(dataset))]
    assert items[1]["pixel_values"] is not None and items[1]["patch_features"] is None
    assert items[6]["patch_features"].shape[0] == 1  # the image: a one-frame grid
    assert items[7].get("skipped")  # unreadable: skipped as without a cache
    batch = collator(items)
    assert [isinstance(e, dict) for e in batch["images"]] == [True, False, True, True, True, True, True]
    assert [s["id"] for s in batch["skipped"]] == ["broken"]
    with torch.no_grad():  # a batch mixing cached and online inputs goes through the model
        assert torch.isfinite(model(**{k: v for k, v in batch.items() if k != "skipped"}).loss)


def test_cache_reads_in_dataloader_workers(assets, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_features.main(cache_args(assets, cache_dir))
    _, dataset, collator = build(assets, cache_dir)
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collator))
    grids = [entry["patch_features"] for batch in batches for entry in batch["images"]]
    assert len(grids) == 12 and all(g.shape[0] == 8 for g in grids)
    # Sent by reference (the shard and the key), a tensor again here, equal to the entry read in this process.
    in_this_process = [dataset[i]["patch_features"] for i in range(len(dataset)) if i in dataset.cache_keys]
    assert all(isinstance(g, torch.Tensor) for g in grids)
    assert all(torch.equal(a, b) for a, b in zip(grids, in_this_process))


def test_a_worker_sends_a_cache_entry_as_its_shard_and_key(assets, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_features.main(cache_args(assets, cache_dir))
    _, dataset, _ = build(assets, cache_dir)
    key = next(iter(dataset.cache_keys.values()))
    sent = dataset.feature_cache.load(key, for_another_process=True)
    payload = pickle.dumps(sent)
    assert len(payload) < 1024  # a few hundred bytes instead of the grid's
    assert torch.equal(pickle.loads(payload), dataset.feature_cache.load(key))


def test_namespace_follows_tower_layer_and_weights_not_dtype(assets, tmp_path):
    model, _, _ = build(assets)
    tower = model.get_vision_tower()
    namespace = FeatureCache(str(tmp_path), tower).namespace

    layer = describe_tower(tower) | {"select_layer": -1}
    assert FeatureCache(str(tmp_path), tower, description=layer).namespace != namespace
    tower.to(torch.bfloat16)  # a ZeRO-3 run holds the same tower in bfloat16: same features up to rounding
    assert FeatureCache(str(tmp_path), tower).namespace == namespace
    tower.to(torch.float32)
    with torch.no_grad():
        next(tower.parameters()).add_(0.1)  # a tuned tower is another tower
    assert FeatureCache(str(tmp_path), tower).namespace != namespace


@pytest.mark.slow
def test_a_saved_checkpoint_caches_with_its_own_tower(assets, tmp_path):
    checkpoint = train_tiny_checkpoint(assets, tmp_path / "run", steps=1)
    cache_dir = tmp_path / "cache"
    # The checkpoint's tower is the one a run from the plain LM + --vision_tower loads: one namespace.
    from_checkpoint = cache_features.main(
        [
            "--model_name_or_path",
            checkpoint,
            "--data_path",
            assets["train"],
            "--video_folder",
            assets["video_folder"],
            "--feature_cache",
            str(cache_dir),
            "--dataloader_num_workers",
            "0",
        ]
    )
    from_tower = cache_features.main(cache_args(assets, cache_dir))
    assert from_checkpoint["namespace"] == from_tower["namespace"]
    assert (from_tower["computed"], from_tower["present"]) == (0, 12)


def test_cache_features_explains_a_missing_tower(tmp_path, assets):
    with pytest.raises(ValueError, match="--vision_tower"):
        cache_features.main(
            [
                "--model_name_or_path",
                assets["gpt2"],
                "--data_path",
                assets["train"],
                "--feature_cache",
                str(tmp_path / "cache"),
            ]
        )


def test_a_yaml_mixture_caches_the_samples_training_draws(assets, tmp_path):
    # random:N draws with the run's seed: caching with the training flags must draw the same clips.
    mixture = tmp_path / "mixture.yaml"
    mixture.write_text(f"datasets:\n  - json_path: {assets['train']}\n    sampling_strategy: random:50%\n")
    cache_dir = tmp_path / "cache"
    summary = cache_features.main(cache_args(assets, cache_dir, str(mixture), "--seed", "7"))
    assert summary["computed"] == 6
    args = train.parse_args(
        train_args(assets, "unused-output", "--feature_cache", str(cache_dir), "--seed", "7", data=str(mixture))
    )
    _, _, dataset, _, _ = train.model_and_data(args)
    assert len(dataset) == 6 and len(dataset.cache_keys) == 6


def test_weights_digest_is_that_of_the_weights_bytes_as_before(assets):
    # The digest names existing caches' namespaces: hashing each tensor in place must give the digest of
    # name + shape + bfloat16 bytes, concatenated, as the shards written before were named by.
    model, _, _ = build(assets)
    tower = model.get_vision_tower()
    tower.register_buffer("transposed", torch.randn(5, 7).t())  # a non-contiguous tensor is hashed in C order

    def bytes_of(name, t):
        return name.encode() + str(tuple(t.shape)).encode() + t.to(torch.bfloat16).view(torch.int16).numpy().tobytes()

    concatenated = hashlib.blake2b(digest_size=16)
    for name, t in sorted(tower.state_dict().items()):
        concatenated.update(bytes_of(name, t))
    assert weights_digest(tower) == concatenated.hexdigest()


# ---------------------------------------------------------------- the loop: workers, batches, shards
LOOP_THREADS = {"feature-cache-writer", "clip-decoding"}  # cache_features' own threads


def loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in LOOP_THREADS]


def stored_entries(cache_dir) -> dict[str, torch.Tensor]:
    """Every entry of every shard in a cache folder, by key."""
    entries = {}
    for shard in Path(cache_dir).glob("*/shard-*.safetensors"):
        with safe_open(shard, framework="pt") as f:
            entries.update({key: f.get_tensor(key) for key in list(f.keys())})
    return entries


def with_a_broken_clip(assets, tmp_path) -> str:
    samples = json.loads(Path(assets["train"]).read_text())
    broken = write_broken_inputs(tmp_path / "broken", Path(assets["video_folder"]) / samples[0]["video"])
    samples.insert(5, {**samples[0], "id": "broken", "video": str(broken["truncated.mp4"])})
    data = tmp_path / "data.json"
    data.write_text(json.dumps(samples))
    return str(data)


@pytest.mark.parametrize("workers", [0, 2])
def test_entries_are_the_same_whatever_the_workers_batches_and_shards(assets, tmp_path, workers):
    data = with_a_broken_clip(assets, tmp_path)
    one_batch = cache_features.main(cache_args(assets, tmp_path / "one", data, "--clips_per_batch", "16"))
    # Batches of 3 clips (a short last one), a shard per entry: the writer thread's queue is at its bound.
    split = cache_features.main(
        cache_args(
            assets,
            tmp_path / "split",
            data,
            "--dataloader_num_workers",
            str(workers),
            "--clips_per_batch",
            "3",
            "--shard_size_mb",
            "0",
        )
    )
    for summary in (one_batch, split):
        assert (summary["computed"], summary["present"], summary["unreadable"]) == (12, 0, 1)
        # The seconds a benchmark reports: the tower's are a part of the loop's.
        assert summary["setup_seconds"] > 0 and summary["loop_seconds"] >= summary["tower_seconds"] > 0
    assert one_batch["namespace"] == split["namespace"]
    assert len(list((tmp_path / "one").glob("*/shard-*"))) == 1
    assert len(list((tmp_path / "split").glob("*/shard-*"))) == 12
    expected, got = stored_entries(tmp_path / "one"), stored_entries(tmp_path / "split")
    assert len(expected) == 12 and sorted(got) == sorted(expected)
    for key, grid in expected.items():
        assert got[key].dtype == grid.dtype and torch.equal(got[key], grid), key
    assert loop_threads() == []


def test_a_shard_that_cannot_be_written_in_the_background_ends_the_command_in_one_line(assets, tmp_path, monkeypatch):
    # Shards are written by a thread of their own while the tower goes on; a full disk there (here at the
    # second shard) still ends the command with errors.saving's one line, and leaves no partial file.
    writes, save_file = [], feature_cache_module.save_file

    def disk_full_at_the_second(*args, **kwargs):
        writes.append(1)
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save_file(*args, **kwargs)

    monkeypatch.setattr(feature_cache_module, "save_file", disk_full_at_the_second)
    cache_dir = tmp_path / "cache"
    done = run_cli(
        cache_features.cli, cache_args(assets, cache_dir, None, "--clips_per_batch", "2", "--shard_size_mb", "0")
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    (namespace,) = cache_dir.iterdir()
    assert re.fullmatch(
        rf"error: no space left on the device saving a feature cache shard \({re.escape(str(namespace))}: "
        r"needs about .+, .+ free\)",
        errors[0],
    )
    assert len(writes) == 2  # nothing is written after the failure
    names = sorted(p.name for p in namespace.iterdir())
    assert len(names) == 2 and names[0] == "manifest.json" and names[1].startswith("shard-"), names
    assert loop_threads() == []


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_tower_stops_the_loop_and_its_threads(assets, tmp_path, monkeypatch, workers):
    calls, forward = [], VisionTower.forward

    def fails_at_the_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the tower failed")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(VisionTower, "forward", fails_at_the_second_batch)
    extra = ("--dataloader_num_workers", str(workers), "--clips_per_batch", "2", "--shard_size_mb", "0")
    with pytest.raises(RuntimeError, match="the tower failed"):
        cache_features.main(cache_args(assets, tmp_path / "cache", None, *extra))
    assert loop_threads() == []
    # The first batch's entries were written (a shard each) or dropped, never half-written.
    assert len(stored_entries(tmp_path / "cache")) <= 2
    assert not list((tmp_path / "cache").glob("*/.*partial"))
