"""DataLoader workers that persist from epoch to epoch (the default with --dataloader_num_workers above 0), on
the cached path, with everything that depends on the epoch kept right.

Real training runs in this process (train.main), two workers, three epochs of three steps, over a set of
eight cached clips (one of whose cache entries is damaged), one unreadable clip and three text-only
samples. A run is compared with the same run whose workers do not persist, with the order its sampler
gives for each epoch, and with itself stopped mid-epoch and resumed; train_helpers.StepRecord records
what every step's batch held. Every run has to leave no worker behind (see LlavaTrainer.train).
"""

import json
import logging
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from accelerate.data_loader import get_sampler
from safetensors import safe_open

from llava.train import cache_features, feature_cache, train
from llava.train.arguments import parse_args
from llava.train.preemption import TrainingInterrupted

from media_helpers import write_broken_inputs
from test_damaged_files import flip_bytes, safetensors_data_start, shard_of_each_sample
from train_helpers import StepRecord, make_assets, train_args

EPOCHS, STEPS_PER_EPOCH = 3, 3  # 12 samples, batches of 4
DAMAGED = "train_00003"  # the clip whose cache entry has a flipped byte
BROKEN = "broken"  # the clip that cannot be read


@pytest.fixture(scope="module")
def cached_set(tmp_path_factory):
    """Assets, a data file of 12 samples (8 clips, one unreadable clip, 3 text-only), and a feature cache of
    the 8 clips, one entry per shard, the entry of DAMAGED with one byte flipped."""
    root = tmp_path_factory.mktemp("persistent")
    assets = make_assets(root / "assets", num_train=8, num_val=0)
    clips = json.loads(Path(assets["train"]).read_text())
    broken = write_broken_inputs(root / "broken", Path(assets["video_folder"]) / clips[0]["video"])
    caption = clips[0]["conversations"]
    samples = [
        *clips,
        {"id": BROKEN, "video": str(broken["truncated.mp4"]), "conversations": caption},
        *(
            {"id": f"text_{i}", "conversations": [{"from": "human", "value": ""}, c["conversations"][1]]}
            for i, c in enumerate(clips[:3])
        ),
    ]
    data = root / "train.json"
    data.write_text(json.dumps(samples))
    cache = root / "cache"
    summary = cache_features.main(
        [*train_args(assets, root / "unused", data=str(data)), "--feature_cache", str(cache), "--shard_size_mb", "0"]
    )
    assert (summary["computed"], summary["unreadable"]) == (8, 1)
    shard = shard_of_each_sample(assets, cache)[[c["id"] for c in clips].index(DAMAGED)]
    flip_bytes(shard, safetensors_data_start(shard) + 100, count=1)
    return {
        "assets": assets,
        "data": str(data),
        "cache": str(cache),
        "clips": [c["id"] for c in clips],
        "damaged_shard": str(shard),
        "root": root,
    }


@dataclass
class Run:
    record: StepRecord
    output_dir: Path
    sampler_orders: list[list[str]]  # the ids in the order the run's sampler gives for each epoch
    skip_count: int
    checksums: list[tuple[int, int]]  # (process id, CRC-32) of every checksum the feature cache computed
    opened: list[tuple[int, str]]  # (process id, shard) of every shard file the feature cache opened
    cache_log: str  # the feature cache's warnings, from every process


def run(cached_set, name: str, *flags: str, stop_after: int | None = None, output_dir: Path | None = None) -> Run:
    """A run of EPOCHS epochs with two DataLoader workers and the feature cache; `flags` are added."""
    output_dir = output_dir or cached_set["root"] / name
    args = train_args(
        cached_set["assets"],
        output_dir,
        "--feature_cache",
        cached_set["cache"],
        "--dataloader_num_workers",
        "2",
        "--save_steps",
        "1000",
        "--max_skip_fraction",
        "0.25",
        *flags,
        steps=EPOCHS * STEPS_PER_EPOCH,
        data=cached_set["data"],
    )
    checksums_file, opened_file = cached_set["root"] / f"{name}.checksums", cached_set["root"] / f"{name}.opened"
    log_file = cached_set["root"] / f"{name}.log"
    real_checksum, real_open = feature_cache.entry_checksum, feature_cache.safe_open

    def entry_checksum(grid):  # in whichever process computes it: one line, appended whole
        value = real_checksum(grid)
        with open(checksums_file, "a") as f:
            f.write(f"{os.getpid()} {value}\n")
        return value

    def safe_open(path, *args, **kwargs):
        with open(opened_file, "a") as f:
            f.write(f"{os.getpid()} {path}\n")
        return real_open(path, *args, **kwargs)

    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.WARNING)
    cache_logger = logging.getLogger(feature_cache.__name__)
    cache_logger.addHandler(handler)
    trainer = None
    try:
        with pytest.MonkeyPatch.context() as patch, StepRecord(stop_after=stop_after) as record:
            patch.setattr(feature_cache, "entry_checksum", entry_checksum)
            patch.setattr(feature_cache, "safe_open", safe_open)
            try:
                trainer = train.main(args)
            except TrainingInterrupted:
                assert stop_after is not None
    finally:
        cache_logger.removeHandler(handler)
        handler.close()
    # Persistent workers end with the training, so that a process holding a trainer can still exit (ended
    # here where they did not, before the test fails: pytest would wait for them at exit).
    left = multiprocessing.active_children()
    for worker in left:
        worker.kill()
        worker.join()
    assert not left, f"DataLoader workers outlived the training: {left}"
    orders = []
    if trainer is not None:
        sampler = get_sampler(trainer.callback_handler.train_dataloader)
        samples = trainer.train_dataset.samples
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            orders.append([samples[i]["id"] for i in sampler])

    def lines(path):
        return [line.split(" ", 1) for line in path.read_text().splitlines()] if path.exists() else []

    return Run(
        record,
        output_dir,
        orders,
        trainer.skip_tracker.count if trainer is not None else -1,
        [(int(pid), int(value)) for pid, value in lines(checksums_file)],
        [(int(pid), shard) for pid, shard in lines(opened_file)],
        log_file.read_text() if log_file.exists() else "",
    )


@pytest.fixture(scope="module")
def runs(cached_set):
    """`runs(sampler, persistent)`: the run with that sampler ('default' or 'group_by_modality_length'),
    its workers persisting or not, made once for the module."""
    made = {}

    def get(sampler: str, persistent: bool) -> Run:
        key = (sampler, persistent)
        if key not in made:
            flags = ["--dataloader_persistent_workers", str(persistent)]
            if sampler == "group_by_modality_length":
                flags += ["--group_by_modality_length", "True"]
            made[key] = run(cached_set, f"{sampler}-{'persistent' if persistent else 'renewed'}", *flags)
        return made[key]

    return get


def test_workers_persist_by_default_where_there_are_workers(tmp_path):
    base = ["--model_name_or_path", "unused", "--output_dir", str(tmp_path)]
    assert parse_args([*base, "--dataloader_num_workers", "4"], log=False).training.dataloader_persistent_workers
    assert not parse_args(base, log=False).training.dataloader_persistent_workers  # no workers to keep
    off = parse_args([*base, "--dataloader_num_workers", "4", "--dataloader_persistent_workers", "False"], log=False)
    assert not off.training.dataloader_persistent_workers


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["default", "group_by_modality_length"])
def test_each_epoch_sees_the_order_its_sampler_gives(runs, sampler):
    persistent, renewed = runs(sampler, True), runs(sampler, False)
    epochs = persistent.record.epochs(STEPS_PER_EPOCH)
    assert epochs == persistent.sampler_orders, (epochs, persistent.sampler_orders)
    assert len({tuple(order) for order in epochs}) == EPOCHS  # a new order every epoch
    assert all(sorted(order) == sorted(epochs[0]) for order in epochs)  # every sample once an epoch
    assert persistent.record.steps == renewed.record.steps  # as with workers started anew every epoch
    # The same workers served every epoch: never more than two of them.
    assert persistent.record.workers == [2] * EPOCHS * STEPS_PER_EPOCH


@pytest.mark.slow
def test_an_unreadable_clip_is_counted_and_listed_once_over_the_epochs(runs):
    persistent, renewed = runs("default", True), runs("default", False)
    met = [source for step in persistent.record.steps for sample_id, source in step if sample_id == BROKEN]
    assert met == ["skipped"] * EPOCHS  # met, and skipped, in every epoch
    listed = (persistent.output_dir / "skipped_samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in listed] == [BROKEN]
    assert persistent.skip_count == renewed.skip_count == 1
    assert listed == (renewed.output_dir / "skipped_samples.jsonl").read_text().splitlines()


@pytest.mark.slow
def test_each_cache_entry_is_checked_once_and_the_damaged_one_is_found_on_its_first_read(runs, cached_set):
    for persistent in (True, False):
        result = runs("default", persistent)
        # One CRC per entry over three epochs and two workers: the eight entries, the damaged one included
        # (its CRC is not the one its shard records), all computed in the workers.
        stored = set()
        for shard in Path(cached_set["cache"]).glob("*/shard-*.safetensors"):
            with safe_open(str(shard), framework="pt") as f:
                stored |= {int(v, 16) for v in json.loads(f.metadata()["checksums"]).values()}
        counts = Counter(value for _, value in result.checksums)
        assert len(result.checksums) == 8 and all(n == 1 for n in counts.values()), result.checksums
        assert len(set(counts) - stored) == 1  # the damaged entry's
        assert os.getpid() not in {pid for pid, _ in result.checksums}
        # Found on its first read, named once; its sample took the online path in every epoch, the others
        # were read from the cache every time.
        named = [line for line in result.cache_log.splitlines() if "damaged feature cache shard" in line]
        assert len(named) == 1 and cached_set["damaged_shard"] in named[0], result.cache_log
        assert "does not match its checksum" in named[0]
        sources = {}
        for step in result.record.steps:
            for sample_id, source in step:
                sources.setdefault(sample_id, []).append(source)
        assert sources[DAMAGED] == ["online"] * EPOCHS
        assert all(sources[clip] == ["cache"] * EPOCHS for clip in cached_set["clips"] if clip != DAMAGED)


@pytest.mark.slow
def test_persistent_workers_open_each_cache_shard_once_for_the_whole_run(runs, cached_set):
    # The cache is indexed in this process and inherited by the workers, which open a shard when they
    # first read from it (one entry per shard here, each read once an epoch): workers that persist open
    # each shard at most once each for the whole run; workers started anew open every shard every epoch.
    shards = {str(p) for p in Path(cached_set["cache"]).glob("*/shard-*.safetensors")}
    opened = {}
    for persistent in (True, False):
        in_workers = [(pid, shard) for pid, shard in runs("default", persistent).opened if pid != os.getpid()]
        assert {shard for _, shard in in_workers} == shards
        assert all(n == 1 for n in Counter(in_workers).values()), in_workers
        opened[persistent] = in_workers
    assert len({pid for pid, _ in opened[True]}) <= 2 and len(opened[True]) <= 2 * len(shards)
    assert len({pid for pid, _ in opened[False]}) <= 2 * EPOCHS and len(opened[False]) == EPOCHS * len(shards)


@pytest.mark.slow
def test_a_run_resumed_mid_epoch_sees_the_rest_of_that_epoch_then_whole_epochs(runs, cached_set):
    straight = runs("default", True)
    output_dir = cached_set["root"] / "resumed"
    flags = ("--dataloader_persistent_workers", "True")
    stopped = run(cached_set, "stopped", *flags, stop_after=STEPS_PER_EPOCH + 1, output_dir=output_dir)
    assert (output_dir / f"checkpoint-{STEPS_PER_EPOCH + 1}").is_dir()
    resumed = run(cached_set, "resumed", *flags, output_dir=output_dir)
    assert len(resumed.record.steps) == EPOCHS * STEPS_PER_EPOCH - STEPS_PER_EPOCH - 1
    assert stopped.record.steps + resumed.record.steps == straight.record.steps
    # The resumed epoch reads through a loader of its own, with workers of its own: they end with it.
    assert resumed.record.workers == [2] * len(resumed.record.steps)
    # The unreadable clip, met in every epoch, before the stop and after it, is still listed once.
    listed = (output_dir / "skipped_samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in listed] == [BROKEN]
    assert resumed.skip_count == 1
