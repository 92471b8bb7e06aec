"""The built-in demo: trains a video captioner from nothing on this machine and shows that it sees, and
how its grammar grows with the words it has read.

`python -m llava.demo.run [--quick]` (what `make demo` / `make demo-quick` run):
1. writes a synthetic Italian data set (one or two moving shapes, real mp4 clips, LLaVA JSON, train/val
   splits) whose captions agree in gender and number with the shape noun ("una croce rossa si muove",
   "due cerchi rossi si muovono"), minimal pairs from the same grammar (BLiMP's JSONL form: gender and
   number agreement, word order), trains a byte-level BPE tokenizer on its captions, and saves a small
   random GPT-2 and a small random DINOv2 with `save_pretrained`, laid out like a BAMBI folder and
   facebook/dinov2-large;
2. trains through `train_italian_video.sh` (the cluster script) with DeepSpeed ZeRO-2, two processes,
   saving a checkpoint at word milestones a decade apart from the first optimizer step on, each evaluated
   beside the training as soon as it is saved (`--eval_milestones`; the script evaluates the final model
   once the training is done) with `llava.eval.curves`: accuracy on the minimal pairs (lm-eval, overall
   and per group), caption loss, grounding gap and CIDEr on the validation clips;
3. evaluates on the validation split: caption loss and the accuracy of the colour, shape, direction and
   count words of greedy captions, for the model with its clips and for a video-blind control (the same
   model given another sample's clip), against chance;
4. prints both tables, writes them with every caption to `results.json`, the loss curve to `loss.png` and
   the learning curves (against words seen) to `curves.png`.

Everything goes under --workdir (demo_run/ under the working directory). The training script is the
repository's: the demo runs from a checkout (an editable install, or any install started from the
checkout's root), and says so in one line where it finds no script.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import errors
from ..errors import InputError, UsageError, UserError, listing
from ..eval.curve_report import aligned_columns
from .babylm_data import write_babylm_tasks
from .grammar import ATTRIBUTE_WORDS, write_minimal_pairs
from .synthetic import caption_corpus, make_dataset, save_gpt2, train_tokenizer

# The cluster script the demo trains through lies at a checkout's root: the one this package is imported
# from (an editable install), else the working directory.
TRAINING_SCRIPT = "train_italian_video.sh"
CHECKOUT = Path(__file__).resolve().parents[2]
# attribute -> its values (the masculine singular words; 1 and 2 for the count)
ATTRIBUTES = {name: tuple(dict.fromkeys(words.values())) for name, words in ATTRIBUTE_WORDS.items()}
# What a demo run writes in its workdir: a folder holding nothing else is an earlier run, which the
# next run deletes; a folder holding anything else is refused, never deleted.
WORKDIR_ENTRIES = {"data", "tokenizer", "models", "checkpoints", "loss.png", "curves.png", "curves_text.png"}
WORKDIR_ENTRIES |= {"results.json", "comparison"}
# The two conditions trained on the same captions: with their clips, and the captions alone.
CONDITIONS = ("video", "text")


@dataclass(frozen=True)
class Preset:
    num_train: int
    num_val: int
    epochs: int
    batch_size: int = 8  # per process; two processes
    learning_rate: float = 2e-3
    adapter_learning_rate: float = 2e-3  # resampler, projector and embeddings
    gpt2_layers: int = 4
    gpt2_width: int = 128
    select_layer: int = -2
    tunable_parts: str = "mm_vision_resampler,mm_mlp_adapter,mm_language_model"
    word_milestones: str = ""  # comma-separated word counts at which training saves a checkpoint
    babylm_items: int = 24  # items per task (per paradigm for the minimal pairs) of the BabyLM-format tasks


# Word milestones a decade apart from the first optimizer step (about 130 words, still at chance on the
# minimal pairs) on: the full run trains about 270k words, the quick one about 52k.
PRESETS = {
    # training on 2 cores, as measured with other work beside it: 8-23 min for the full preset (2,100
    # steps), 4-8 min for the quick one (400 steps)
    "full": Preset(num_train=960, num_val=96, epochs=35, word_milestones="100,1000,10000,100000"),
    "quick": Preset(num_train=320, num_val=48, epochs=20, word_milestones="100,1000,10000", babylm_items=12),
}


def build_assets(workdir: Path, preset: Preset) -> dict:
    data = make_dataset(workdir / "data", preset.num_train, preset.num_val, seed=0)
    tokenizer = train_tokenizer(workdir / "tokenizer", caption_corpus())
    # No dropout: a model this small, trained this briefly, learns the harder attributes faster without.
    gpt2 = save_gpt2(
        workdir / "models" / "bambi-gpt2-demo",
        tokenizer,
        n_layer=preset.gpt2_layers,
        n_embd=preset.gpt2_width,
        n_head=4,
        n_positions=256,
        dropout=0.0,
    )
    return {
        **data,
        "train_text": write_text_samples(data["train"], workdir / "data" / "train_text.json"),
        "minimal_pairs": write_minimal_pairs(workdir / "data" / "minimal_pairs.jsonl"),
        "babylm": write_babylm_tasks(workdir / "data" / "babylm", items=preset.babylm_items),
        "gpt2": gpt2,
        "tower": save_demo_tower(workdir / "models" / "dinov2-demo"),
    }


def write_text_samples(video_samples: str, path: Path) -> str:
    """The text condition's data: the same captions as text-only samples (as prepare_webvid_italian.py
    writes train_text.json), so that both conditions train on the same words."""
    samples = json.loads(Path(video_samples).read_text())
    text = [{"id": s["id"], "conversations": [s["conversations"][-1]]} for s in samples]
    path.write_text(json.dumps(text, ensure_ascii=False, indent=1))
    return str(path)


def save_demo_tower(folder: Path) -> str:
    """A small random DINOv2 (frozen in training) with a DINOv2-style processor: 56-pixel crops in
    7-pixel patches, an 8x8 grid that the seed's packer grids (8x2x4 and 2x4x4) tile."""
    from ..testing import DEMO_DINOV2, save_dinov2

    return save_dinov2(folder, DEMO_DINOV2, crop=56, resize=64)


def find_training_script() -> Path:
    """The checkout's train_italian_video.sh; a UserError, before any work, where there is none."""
    places = list(dict.fromkeys([CHECKOUT / TRAINING_SCRIPT, Path.cwd() / TRAINING_SCRIPT]))
    for script in places:
        if script.is_file():
            return script
    raise UserError(
        f"the demo trains through {TRAINING_SCRIPT}, which comes with the repository, not with the "
        f"installed package: run it from a checkout's root (looked for {' and '.join(map(str, places))})"
    )


# The video condition's flags that the text condition leaves out (it has no tower).
VISUAL_FLAGS = (
    "vision_tower",
    "video_folder",
    "mm_projector_lr",
    "mm_projector_hidden_size",
    "mm_packer_num_heads",
    "mm_vision_select_layer",
)


def training_flags(assets: dict, preset: Preset, output_dir: Path, condition: str = "video") -> dict[str, object]:
    """The demo's settings, as training flags laid over the headline recipe (the text recipe for the
    text condition; the benchmark of --eval_milestones trains with them too)."""
    if condition == "text":
        flags = {k: v for k, v in training_flags(assets, preset, output_dir).items() if k not in VISUAL_FLAGS}
        return flags | {"data_path": assets["train_text"], "mm_tunable_parts": "mm_language_model"}
    flags = {
        "model_name_or_path": assets["gpt2"],
        "vision_tower": assets["tower"],
        "data_path": assets["train"],
        "video_folder": assets["video_folder"],
        "output_dir": str(output_dir),
        "num_train_epochs": preset.epochs,
        "per_device_train_batch_size": preset.batch_size,
        "learning_rate": preset.learning_rate,
        "mm_projector_lr": preset.adapter_learning_rate,
        "warmup_ratio": 0.05,
        "model_max_length": 256,
        "mm_projector_hidden_size": 256,
        "mm_packer_num_heads": 4,
        "logging_steps": 5,
        "save_steps": 100000,
        "save_total_limit": 1,
        "dataloader_num_workers": 1,
        "seed": 0,
        "mm_vision_select_layer": preset.select_layer,
        "mm_tunable_parts": preset.tunable_parts,
    }
    if preset.word_milestones:
        flags["word_milestones"] = preset.word_milestones
    return flags


def train(assets: dict, preset: Preset, output_dir: Path, script: Path, condition: str = "video") -> float:
    """Runs the cluster script with plain bash: torchrun, two processes, DeepSpeed ZeRO-2 on the CPU, the
    headline recipe (MODE=text: the text recipe) with the demo's settings as flags. With word milestones,
    each milestone is evaluated beside the training as it is saved (--eval_milestones), and the script
    evaluates the final model once the training is done."""
    from ..train.command_line import tokens

    env = {**os.environ, "MODE": condition, "NPROC": "2", "PYTHON": sys.executable}
    flags = training_flags(assets, preset, output_dir, condition) | {"deepspeed": "scripts/zero2.json"}
    if preset.word_milestones:
        # Beside the training rather than after it: measured on 2 cores, the quick demo's training and
        # curve took 5.1 min so, 6.4 min one after the other.
        flags["eval_milestones"] = shlex.join(curve_arguments(assets, condition))
    arguments = tokens(flags)
    start = time.perf_counter()
    # From the script's folder: --deepspeed is relative to it.
    status = subprocess.run(["bash", str(script), *arguments], cwd=script.parent, env=env).returncode
    if status != 0:
        # The script and the ranks have printed their own error above; a traceback here would add nothing.
        how = f"was killed by {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
        raise UserError(f"training failed: train_italian_video.sh {how}, its own error is above ({output_dir})")
    return time.perf_counter() - start


def attribute_words(caption: str) -> dict:
    """The value of the first colour, shape, direction and count word a caption names, in any of its
    forms ("rosse" names rosso, "due" the count 2); None where it names none."""
    from ..eval.metrics import tokenize_caption

    words = tokenize_caption(caption)
    return {name: next((forms[w] for w in words if w in forms), None) for name, forms in ATTRIBUTE_WORDS.items()}


def evaluate(output_dir: Path, assets: dict) -> dict:
    from ..eval.captions import caption_loss, derangement, generate_captions, load_items, with_clips_from
    from ..model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(output_dir))
    _, items = load_items(model, tokenizer, processor, assets["val"], assets["video_folder"])
    truth = {s["id"]: s["attributes"] for s in json.loads(Path(assets["val"]).read_text())}
    conditions = {"video": items, "blind": with_clips_from(items, derangement(len(items)))}
    results = {}
    for name, condition in conditions.items():
        captions = generate_captions(model, tokenizer, condition, max_new_tokens=16)
        named = [attribute_words(c) for c in captions]
        accuracy = {a: sum(n[a] == truth[i["id"]][a] for n, i in zip(named, items)) / len(items) for a in ATTRIBUTES}
        results[name] = {
            "loss": caption_loss(model, tokenizer, condition),
            "accuracy": accuracy,
            "captions": [{"id": i["id"], "caption": c, "truth": truth[i["id"]]} for i, c in zip(items, captions)],
        }
    results["chance"] = {a: 1 / len(v) for a, v in ATTRIBUTES.items()}
    return results


def curve_arguments(assets: dict, condition: str = "video") -> list[str]:
    """The arguments of `python -m llava.eval.curves` after OUTPUT_DIR: the grammar's minimal pairs, the
    BabyLM-format tasks and, for the video condition, the validation captions."""
    arguments = ["--minimal-pairs", assets["minimal_pairs"], "--babylm", *assets["babylm"].values()]
    if condition == "video":
        arguments += ["--captions", assets["val"], "--video-folder", assets["video_folder"]]
    return arguments


def learning_curve(output_dir: Path, assets: dict, png: Path, condition: str = "video") -> dict:
    """The learning curve of the run (llava.eval.curves, which writes curves.jsonl and curves.png beside the
    checkpoints; a checkpoint that training did not evaluate yet is evaluated here): its rows, its table,
    and the plot copied to `png`."""
    from ..eval import curves

    # its own table printed here would come before the demo's; the demo prints it at the end
    with contextlib.redirect_stdout(io.StringIO()):
        result = curves.main([str(output_dir), *curve_arguments(assets, condition)])
    shutil.copyfile(result["plot"], png)
    return {"rows": result["rows"], "table": result["table"]}


def comparison(runs: dict[str, Path], out: Path) -> dict:
    """The two conditions side by side (llava.eval.compare): comparison.csv and a plot per task in `out`."""
    from ..eval import compare

    with contextlib.redirect_stdout(io.StringIO()):
        result = compare.main([*map(str, runs.values()), "--out", str(out)])
    return {"csv": result["csv"], "header": result["header"], "rows": result["rows"], "plots": result["plots"]}


def format_table(results: dict) -> str:
    video, blind, chance = results["video"], results["blind"], results["chance"]
    rows = [
        ("", "video model", "blind control", "chance"),
        ("val caption loss", f"{video['loss']:.3f}", f"{blind['loss']:.3f}", ""),
    ]
    for attribute in ATTRIBUTES:
        rows.append(
            (
                f"{attribute} accuracy",
                f"{video['accuracy'][attribute]:.0%}",
                f"{blind['accuracy'][attribute]:.0%}",
                f"{chance[attribute]:.0%}",
            )
        )
    return aligned_columns([list(r) for r in rows])


def plot_loss(trainer_state: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = json.loads(trainer_state.read_text())["log_history"]
    steps = [h["step"] for h in history if "loss" in h]
    losses = [h["loss"] for h in history if "loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training caption loss")
    ax.set_title("demo: video captioning on synthetic clips")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def _preset_from_env(preset: Preset) -> Preset:
    """DEMO_EPOCHS=... and the like override a preset's fields (for exploring; not needed to run)."""
    from dataclasses import fields, replace

    changes = {}
    for f in fields(preset):
        name = f"DEMO_{f.name.upper()}"
        if name in os.environ:
            kind = type(getattr(preset, f.name))
            try:
                changes[f.name] = kind(os.environ[name])
            except ValueError:
                expected = "a whole number" if kind is int else "a number"  # str fields take any text
                raise UsageError(
                    f"{name}={os.environ[name]!r} is not {expected} (it overrides the preset's {f.name})"
                ) from None
    return replace(preset, **changes)


def prepare_workdir(workdir: Path) -> None:
    """Empties an earlier demo run's folder (a demo run starts from nothing; it never resumes an old
    one); refuses, before any work, a folder that holds anything else or cannot be written."""
    errors.check_writable(str(workdir), "--workdir")
    if not workdir.exists():
        return
    others = sorted(entry.name for entry in workdir.iterdir() if entry.name not in WORKDIR_ENTRIES)
    if others:
        shown = listing(others, 3, ", ")
        raise InputError(
            f"--workdir holds files that no demo run wrote ({shown}); the demo empties its workdir "
            f"before it starts, so name a new folder, an empty one or an earlier demo run's ({workdir})"
        )
    shutil.rmtree(workdir)


def main(argv=None) -> dict:
    parser = errors.ArgumentParser(
        prog="python -m llava.demo.run", description="Train and evaluate the built-in video-captioning demo."
    )
    parser.add_argument("--quick", action="store_true", help="fewer clips and steps (what the tests run)")
    # Relative to the working directory, not to the package: an installed package's folder is no place to write.
    parser.add_argument("--workdir", default="demo_run", help="where data, models and results go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    preset = _preset_from_env(PRESETS["quick" if args.quick else "full"])
    # Absolute: the training script runs in its own folder, and every path handed to it must still hold there.
    workdir = Path(os.path.abspath(args.workdir))
    script = find_training_script()
    prepare_workdir(workdir)
    start = time.perf_counter()
    print(f"demo ({'quick' if args.quick else 'full'}): {asdict(preset)}; writing to {workdir}", flush=True)
    assets = build_assets(workdir, preset)
    runs = {condition: workdir / "checkpoints" / f"llava-demo-{condition}" for condition in CONDITIONS}
    train_seconds = {condition: train(assets, preset, runs[condition], script, condition) for condition in CONDITIONS}
    output_dir = runs["video"]
    results = evaluate(output_dir, assets)
    results["curve"] = learning_curve(output_dir, assets, workdir / "curves.png")
    results["text_curve"] = learning_curve(runs["text"], assets, workdir / "curves_text.png", "text")
    results["comparison"] = comparison(runs, workdir / "comparison")
    results["train_seconds"] = train_seconds  # with the learning curve's evaluation, beside and after it
    results["total_seconds"] = time.perf_counter() - start
    plot_loss(output_dir / "trainer_state.json", workdir / "loss.png")
    (workdir / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=1))
    print("\n" + format_table(results))
    print("\nlearning curve of the video model (by words seen):\n" + results["curve"]["table"])
    print("\nthe two conditions on the same words (llava.eval.compare; BabyLM tasks in the pipeline's %):")
    print(format_comparison(results["comparison"]))
    print(
        f"\ntraining and learning curves {train_seconds['video'] / 60:.1f} min (video), "
        f"{train_seconds['text'] / 60:.1f} min (text), all {results['total_seconds'] / 60:.1f} min; loss curve "
        f"{workdir / 'loss.png'}, learning curves {workdir / 'curves.png'} and {workdir / 'curves_text.png'}, "
        f"comparison {workdir / 'comparison'}, captions {workdir / 'results.json'}",
        flush=True,
    )
    return results


def format_comparison(comparison: dict) -> str:
    """The rows both conditions have (the caption measures are the video model's alone)."""
    both = [row for row in comparison["rows"] if all(cell != "" for cell in row[2:])]
    return aligned_columns([comparison["header"], *both])


if __name__ == "__main__":
    errors.entry_point(main)()
