"""Tiny training runs on clips written by the tests: assets and the command line that trains on them."""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from llava.demo.synthetic import caption_corpus, make_dataset, save_gpt2, train_tokenizer
from llava.testing import save_tiny_vision_tower
from llava.train import command_line

ROOT = Path(__file__).resolve().parents[1]


def make_assets(folder, num_train=24, num_val=4) -> dict:
    folder = Path(folder)
    data = make_dataset(folder / "data", num_train, num_val, seed=0)
    tokenizer = train_tokenizer(folder / "tokenizer", caption_corpus())
    return {
        **data,
        "gpt2": save_gpt2(folder / "bambi-gpt2", tokenizer, n_positions=256),
        "tower": save_tiny_vision_tower(folder / "dinov2"),
    }


def train_args(assets, output_dir, *extra, steps=8, data=None):
    """Arguments of a tiny video+text run (tiny tower: 8x8 patches, seed packer grids)."""
    return [
        "--model_name_or_path",
        assets["gpt2"],
        "--vision_tower",
        assets["tower"],
        "--data_path",
        data or assets["train"],
        "--video_folder",
        assets["video_folder"],
        "--num_frames",
        "8",
        "--mm_packer_num_heads",
        "4",
        "--mm_projector_hidden_size",
        "64",
        "--output_dir",
        str(output_dir),
        "--max_steps",
        str(steps),
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "2e-3",
        "--warmup_steps",
        "0",
        "--logging_steps",
        "1",
        "--save_steps",
        "2",
        "--seed",
        "0",
        "--dataloader_num_workers",
        "0",
        "--disable_tqdm",
        "True",
        *extra,
    ]


def free_port() -> int:
    """A TCP port free on every interface now: for a launcher's rendezvous or a test's server."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def run_training(args, env=None, launcher=(), timeout=600):
    """Runs train.py in a fresh process (optionally under a launcher such as torchrun)."""
    command = (
        [*launcher, "-m", "llava.train.train", *args]
        if launcher
        else [sys.executable, "-m", "llava.train.train", *args]
    )
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def logged_losses(output_dir) -> dict[int, float]:
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


class StepRecord:
    """What the batch of every training step held, in step order, for runs of train.main in this process
    while the record is active (a `with` block): `steps[i]` lists `(sample id, source)` for step i + 1,
    the source being 'cache' (features read from the feature cache), 'online' (pixels decoded for the
    tower), 'text' (no medium) or 'skipped' (unreadable); `workers[i]` is how many child processes this
    process had at that step (its DataLoader workers).

    Observed through the real code: the collator (run by the DataLoader workers, forked while the record
    is active, or by this process) writes the list into a key of its batch, and the trainer's compute_loss
    takes that key out before it runs as before. `stop_after`: once that many steps are recorded, the run
    is told to stop as SLURM tells it (SIGUSR1 to this process); it saves a checkpoint at that step and
    raises preemption.TrainingInterrupted."""

    KEY = "recorded_samples"

    def __init__(self, stop_after: int | None = None):
        self.steps: list[list[tuple[str, str]]] = []
        self.workers: list[int] = []
        self.stop_after = stop_after
        self._patch = pytest.MonkeyPatch()

    def __enter__(self) -> "StepRecord":
        from llava.data.dataset import DataCollatorForSupervisedDataset
        from llava.train.trainer import LlavaTrainer  # (imported here: the fast tier does without it)

        real_collate, real_loss = DataCollatorForSupervisedDataset.__call__, LlavaTrainer.compute_loss
        key, record = self.KEY, self

        def collate(collator, instances):
            batch = real_collate(collator, instances)
            batch[key] = [(item["id"], _source(item)) for item in instances]
            return batch

        def compute_loss(trainer, model, inputs, *args, **kwargs):
            seen = inputs.pop(key, None)
            if seen is not None and model.training:
                record.steps.append(seen)
                record.workers.append(len(multiprocessing.active_children()))
                if len(record.steps) == record.stop_after:
                    os.kill(os.getpid(), signal.SIGUSR1)
            return real_loss(trainer, model, inputs, *args, **kwargs)

        self._patch.setattr(DataCollatorForSupervisedDataset, "__call__", collate)
        self._patch.setattr(LlavaTrainer, "compute_loss", compute_loss)
        return self

    def __exit__(self, *exc) -> None:
        self._patch.undo()

    def ids(self) -> list[str]:
        """The sample ids of every step, in order."""
        return [sample_id for step in self.steps for sample_id, _ in step]

    def epochs(self, steps_per_epoch: int) -> list[list[str]]:
        """The sample ids of each epoch (`steps_per_epoch` steps each), in order."""
        ids = [[sample_id for sample_id, _ in step] for step in self.steps]
        return [sum(ids[i : i + steps_per_epoch], []) for i in range(0, len(ids), steps_per_epoch)]


def _source(item: dict) -> str:
    if item.get("skipped"):
        return "skipped"
    if item.get("patch_features") is not None:
        return "cache"
    return "online" if item.get("pixel_values") is not None else "text"


def train_tiny_checkpoint(assets, output_dir, steps=4) -> str:
    """A full checkpoint (LM, tower, adapter) of a tiny captioner trained in-process for a few steps."""
    from llava.train import train

    train.main(train_args(assets, output_dir, "--save_steps", "1000", steps=steps))
    return str(output_dir)


@dataclass(frozen=True)
class ScriptPaths:
    """The path flags of train_italian_video.sh's runs (flag name -> value, as flag_tokens takes them): a
    video+text run's, and a text-only run's (MODE=text: its recipe has no tower and no clips, and none are
    given)."""

    video: dict
    text: dict


def flag_tokens(*flag_sets: dict, **flags) -> list[str]:
    """The command-line tokens of training flags given as mappings of flag name (without the dashes) to
    value, a later mapping winning: `flag_tokens(paths.video, max_steps=4)` -> ["--model_name_or_path",
    ..., "--max_steps", "4"]; a list or tuple gives a flag of several values (the packer grids)."""
    merged = {}
    for given in (*flag_sets, flags):
        merged.update(given)
    return command_line.tokens(merged)


def path_flags(assets) -> dict:
    """make_assets' model, tower, data file and clips as a video run's path flags (for flag_tokens)."""
    return {
        "model_name_or_path": assets["gpt2"],
        "vision_tower": assets["tower"],
        "data_path": assets["train"],
        "video_folder": assets["video_folder"],
    }


def make_script_assets(folder) -> ScriptPaths:
    """train_italian_video.sh's path flags for a tiny real run: a few clips with Italian captions, a
    caption-only text file, a BPE tokenizer, a small GPT-2 and a tiny DINOv2, all saved like the real ones."""
    root = Path(folder)
    data = make_dataset(root / "data", num_train=8, num_val=2, seed=0, num_frames=16, size=64)
    samples = json.loads(Path(data["train"]).read_text())
    text_samples = [
        {"id": f"text_{s['id']}", "conversations": [{"from": "human", "value": ""}, s["conversations"][1]]}
        for s in samples
    ]
    text_path = root / "data" / "train_text.json"
    text_path.write_text(json.dumps(text_samples, ensure_ascii=False))
    tokenizer = train_tokenizer(root / "tokenizer", caption_corpus(), vocab_size=300)
    lm = save_gpt2(root / "bambi-gpt2-tiny", tokenizer, n_layer=2, n_embd=64, n_head=4, n_positions=256)
    tower = save_tiny_vision_tower(root / "dinov2-tiny", "dinov2")
    return ScriptPaths(
        video={
            "model_name_or_path": lm,
            "vision_tower": tower,
            "data_path": data["train"],
            "video_folder": data["video_folder"],
        },
        text={"model_name_or_path": lm, "data_path": str(text_path)},
    )


def write_dummy_paths(folder) -> ScriptPaths:
    """train_italian_video.sh's path flags for runs that never train: folders and files that pass the
    preflight's checks without being real models or clips (a GPT-2 config beside an empty weights file, a
    tower config, one video sample whose clip is an empty file, one caption-only sample)."""
    root = Path(folder)
    (root / "lm").mkdir(parents=True)
    (root / "lm" / "config.json").write_text('{"model_type": "gpt2"}')
    (root / "lm" / "model.safetensors").write_bytes(b"")
    (root / "tower").mkdir()
    (root / "tower" / "config.json").write_text('{"model_type": "dinov2"}')
    (root / "videos").mkdir()
    (root / "videos" / "a.mp4").write_bytes(b"")
    turns = [{"from": "human", "value": "<video>\nDescrivi il video."}, {"from": "gpt", "value": "Un cerchio rosso."}]
    (root / "train.json").write_text(json.dumps([{"id": "a", "video": "a.mp4", "conversations": turns}]))
    (root / "text.json").write_text(
        json.dumps([{"id": "t", "conversations": [{"from": "human", "value": ""}, turns[1]]}])
    )
    return ScriptPaths(
        video={
            "model_name_or_path": root / "lm",
            "vision_tower": root / "tower",
            "data_path": root / "train.json",
            "video_folder": root / "videos",
        },
        text={"model_name_or_path": root / "lm", "data_path": root / "text.json"},
    )
