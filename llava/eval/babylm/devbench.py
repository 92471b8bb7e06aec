"""`python -m llava.eval.babylm devbench`: DevBench as the 2025 BabyLM pipeline runs it for a BabyLM model
(`python -m evaluation_pipeline.devbench.eval --model MODEL --model_type git`), with its flags, scores and
files, for this project's checkpoints and the folders `export` writes.

    python -m llava.eval.babylm devbench --model MODEL [--revision chck_10M] \\
        [--data_path evaluation_data/full_eval/devbench] [--output_dir results]

Data in the pipeline's layout (its download_data.sh): DATA/assets/<task>/manifest.csv with the pictures it
names (columns image1.., text1..), DATA/evals/lex-viz_vocab/human.csv, DATA/evals/gram-trog/human.csv and
DATA/evals/sem-things/spose_similarity.mat.

Scores, as the pipeline's BabyLM model class computes them (`devbench/model_classes/babylm_models.py`):
- lex-viz_vocab and gram-trog: each of a trial's pictures against its word, by minus the model's loss on
  "The caption for this image is: WORD." given the picture (labels = the text's ids; the picture before the
  text, or at `<image> ` written before it for `--model_type flamingo`); saved as (trials, 4, 1) arrays;
- sem-things: each picture's feature, the mean over positions of the last hidden state for the picture with
  the text " ", 16 pictures a batch; RSA against the human similarities (devbench_stats.py).
Files in OUTPUT_DIR/<last part of MODEL>/<revision or main>/zero_shot/devbench/: lex-viz_vocab.npy,
gram-trog.npy, sem-things.npy, sem-things_pairwise_sims.npy (the three collate_preds reads), the score
tables and results.txt.

The pipeline's own runner also scores an exported folder: `--model_type git` finds the vision encoder as
`model.git.image_encoder`, which the exported model shows (a view of its tower), and pops the processor's
`token_type_ids`, which the exported processor returns (zeros; the model ignores them).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ...errors import ArgumentParser, InputError, UsageError
from . import devbench_stats, progress

MODEL_TYPES = ("git", "flamingo")  # the pipeline's BabyLM model types; its others are other architectures
CHOICE_TASKS = ("lex-viz_vocab", "gram-trog")
THINGS = "sem-things"
THINGS_BATCH = 16  # the pipeline's data loader's batch size for one picture and one text per row


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m llava.eval.babylm devbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a llava checkpoint, or an exported folder")
    parser.add_argument("--revision", default=None, help="the checkpoint's name in the results (main if none)")
    parser.add_argument("--model_type", default="git", help="git (the picture before the text) or flamingo")
    parser.add_argument("--image_model", default=None, help="(the pipeline's other model types)")
    parser.add_argument("--data_path", default="evaluation_data/full_eval/devbench", type=Path)
    parser.add_argument("--output_dir", default="results", type=Path)
    return parser


def output_path(args) -> Path:
    return args.output_dir / args.model.split("/")[-1] / (args.revision or "main") / "zero_shot" / "devbench"


def manifest(data_path: Path, task: str):
    """(manifest file, its table, picture columns, text columns); one line naming the file that is missing
    or not in the format."""
    import pandas as pd

    file = data_path / "assets" / task / "manifest.csv"
    if not file.is_file():
        raise InputError(f"{file}: missing (DevBench's data: run its download_data.sh into {data_path})")
    table = pd.read_csv(file)
    pictures = [c for c in table.columns if re.match("image[0-9]", c)]
    texts = [c for c in table.columns if re.match("text[0-9]", c)]
    if not pictures or not texts:
        raise InputError(f"{file}: not a DevBench manifest (no image1.. and text1.. columns)")
    return file, table, pictures, texts


def read_manifest(data_path: Path, task: str) -> list[dict]:
    """Each trial's picture files (opened when scored: THINGS' pictures would not all fit in memory) and
    texts, and the manifest row it comes from."""
    file, table, pictures, texts = manifest(data_path, task)
    return [
        {
            "images": [file.parent / str(row[c]) for c in pictures],
            "text": [row[c] for c in texts],
            "where": f"{file} row {number + 2}",
        }
        for number, row in table.iterrows()
    ]


def open_pictures(trial: dict) -> dict:
    """The trial with its pictures opened (RGB); one line naming the manifest's row where one cannot be."""
    from PIL import Image

    opened = []
    for path in trial["images"]:
        try:
            with Image.open(path) as image:
                opened.append(image.convert("RGB"))
        except (OSError, ValueError) as e:
            raise InputError(f"{trial['where']}: picture {path} cannot be read ({e})") from None
    return trial | {"images": opened}


def check_data(data_path: Path) -> None:
    """Every file of the data there (the pictures by name, not decoded): one line for the first missing."""
    read_human(data_path)
    for task in (*CHOICE_TASKS, THINGS):
        file, table, pictures, _ = manifest(data_path, task)
        for number, row in table.iterrows():
            for column in pictures:
                if not (file.parent / str(row[column])).is_file():
                    raise InputError(f"{file} row {number + 2}: picture {file.parent / str(row[column])} is missing")


def read_human(data_path: Path):
    """(lex-viz_vocab's table, gram-trog's table, THINGS' similarity matrix)."""
    import pandas as pd
    from scipy.io import loadmat

    evals = data_path / "evals"
    files = [evals / "lex-viz_vocab" / "human.csv", evals / "gram-trog" / "human.csv"]
    files.append(evals / THINGS / "spose_similarity.mat")
    for file in files:
        if not file.is_file():
            raise InputError(f"{file}: missing (DevBench's human data: run its download_data.sh into {data_path})")
    return pd.read_csv(files[0]), pd.read_csv(files[1]), loadmat(str(files[2]))["spose_sim"]


def model_inputs(processor, images, texts, device) -> dict:
    encoding = processor(images=images, text=texts, return_tensors="pt")
    encoding.pop("token_type_ids", None)
    encoding["labels"] = encoding["input_ids"]
    return {k: v.to(device) for k, v in encoding.items()}


@torch.no_grad()
def caption_scores(model, processor, trial: dict, prefix: str, device) -> list[list[float]]:
    """(pictures, texts): minus the loss of each caption given each picture."""
    sims = np.zeros((len(trial["images"]), len(trial["text"])))
    for i, image in enumerate(trial["images"]):
        for j, text in enumerate(trial["text"]):
            loss = model(**model_inputs(processor, image, f"{prefix}The caption for this image is: {text}.", device))
            sims[i, j] = -loss["loss"].detach().cpu().numpy()
    return sims.tolist()


@torch.no_grad()
def picture_features(model, processor, images, prefix: str, device) -> list[list[float]]:
    """Per picture, the mean over positions of the last hidden state with the text " "."""
    inputs = model_inputs(processor, images, [f"{prefix} "] * len(images), device)
    hidden = model(**inputs, output_hidden_states=True)["hidden_states"][-1]
    return hidden.mean(dim=1).cpu().numpy().tolist()


def score(args, model, processor, out: Path | None = None, quiet: bool = False, device=None) -> dict:
    """The three tasks' scores (going on from a stopped run's progress), comparisons and files (in `out`,
    by default where the pipeline writes them); returns the first picture's share of right choices per
    picture-choice task, THINGS' rho, and results.txt's text (`text`)."""
    from tqdm import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).eval()
    human_vv, human_trog, human_things = read_human(args.data_path)
    out = out or output_path(args)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "<image> " if args.model_type == "flamingo" else ""
    name = args.model.split("/")[-1]
    done = progress.Progress(out, "devbench", [args.data_path, args.model, args.model_type])
    arrays = {}
    for task in (*CHOICE_TASKS, THINGS):
        trials = read_manifest(args.data_path, task)
        if task == THINGS:
            units = [trials[i : i + THINGS_BATCH] for i in range(0, len(trials), THINGS_BATCH)]
        else:
            units = trials
        results = []
        for number, unit in enumerate(tqdm(units, desc=task, disable=quiet)):
            key = f"{task}/{number}"
            if key not in done:
                if task == THINGS:
                    images = [image for trial in unit for image in open_pictures(trial)["images"]]
                    done.add(key, picture_features(model, processor, images, prefix, device))
                else:
                    done.add(key, caption_scores(model, processor, open_pictures(unit), prefix, device))
            results.append(done[key])
        if task == THINGS:
            arrays[task] = np.concatenate([np.asarray(r, dtype=np.float32) for r in results], axis=0)
        else:
            arrays[task] = np.stack([np.asarray(r, dtype=np.float64) for r in results], axis=0)
        np.save(out / f"{task}.npy", arrays[task])
    viz_vocab = devbench_stats.picture_choice_scores(
        arrays["lex-viz_vocab"], human_vv, name, True, out / "lex-vv_scores.csv"
    )
    trog = devbench_stats.picture_choice_scores(
        arrays["gram-trog"], human_trog, name, False, out / "gram-trog_models.csv"
    )
    things = devbench_stats.things_rsa(arrays[THINGS], human_things, name, out)
    text = devbench_stats.results_text(viz_vocab, trog, things)
    (out / "results.txt").write_text(text)
    done.finish()
    if not quiet:
        print(text)
    accuracies = {"lex-viz_vocab": viz_vocab["accuracy"].iloc[0], "gram-trog": trog["accuracy"].iloc[0]}
    return {k: float(v) for k, v in accuracies.items()} | {THINGS: float(things), "text": text}


def run(args) -> dict:
    if args.model_type not in MODEL_TYPES:
        raise UsageError(
            f"--model_type {args.model_type}: this project's models are scored as BabyLM models "
            f"({' or '.join(MODEL_TYPES)}); the pipeline's other types are other architectures"
        )
    from .zero_shot import load_model_and_processor

    check_data(args.data_path)  # a missing file is found before the model loads
    model, processor = load_model_and_processor(args.model, args.revision, pictures=True)
    return score(args, model, processor)


def main(argv: list[str] | None = None) -> dict:
    return run(build_parser().parse_args(argv))
