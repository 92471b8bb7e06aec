"""`python -m llava.eval.babylm reading`: the 2025 BabyLM pipeline's reading evaluation
(`python -m evaluation_pipeline.reading.run`), with its flags, scores and files, for the causal backend.

    python -m llava.eval.babylm reading --model_path_or_name MODEL --backend causal \\
        --data_path evaluation_data/full_eval/reading/reading_data.csv [--revision_name chck_10M]

Each row of the CSV gives a context (`item`) and the word read next (`word`); its surprisal is -log p of
the word after the context, p as the pipeline's causal `get_p2` computes it: the context tokenized alone
(the tokenizer's own special tokens), the softmax of the last position's logits at the word's first token
(the word tokenized without special tokens); a word of several tokens multiplies in each further token's
probability after the context extended by the decoded tokens so far (each decoded token re-tokenized, its
first token read). `prev_item`/`prev_word`, where given, give the previous word's surprisal.

Then, per reading measure (eye tracking: RTfirstfix, RTfirstpass, RTgopast, RTrightbound; self-paced
reading; the ERP components), an ordinary least-squares fit of the measure on the baseline predictors
(log frequency `Subtlex_log10`, `length`, `context_length` and their pairwise products) with and without the
surprisal; the score is the gain in R^2 as a share of what was left to explain, 100 (R2 - R2_base) / (1 -
R2_base). EYE TRACKING SCORE averages it over the four eye-tracking measures; SELF-PACED READING SCORE is
that of self-paced reading time with a one-word spillover (the previous word's length and surprisal among
the baseline predictors). Files as the pipeline writes them, in
OUTPUT_DIR/<model folder name>/<revision or main>/zero_shot/causal/reading/: prediction.jsonl,
predictions.json (what `collate_preds` reads), correlations.txt, predictive_power.jsonl,
predictive_power_spillover.jsonl and report.txt.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import torch

from ...errors import ArgumentParser, InputError, UsageError
from . import progress

MEASURES = (
    "RTfirstfix",
    "RTfirstpass",
    "RTgopast",
    "RTrightbound",
    "self_paced_reading_time",
    "ELAN",
    "LAN",
    "N400",
    "P600",
    "EPNP",
    "PNP",
)
BASELINE = ("Subtlex_log10", "length", "context_length")
SPILLOVER = BASELINE + ("prev_length", "prev_pred")
COLUMNS = ("item", "word", "prev_item", "prev_word") + MEASURES + BASELINE + ("prev_length",)


def build_parser() -> ArgumentParser:
    """The flags of the pipeline's `reading/run.py`, with its names and defaults."""
    parser = ArgumentParser(prog="python -m llava.eval.babylm reading", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="results", type=Path)
    parser.add_argument("--data_path", required=True, type=Path, help="the reading CSV (reading_data.csv)")
    parser.add_argument("--model_path_or_name", required=True, help="a llava checkpoint, or a causal LM folder/name")
    parser.add_argument(
        "--backend",
        required=True,
        choices=("mlm", "mntp", "causal", "enc_dec"),
        help="causal (the others: the pipeline's)",
    )
    parser.add_argument("--number_of_mask_tokens_to_append", default=3, type=int, help="(mlm and mntp)")
    parser.add_argument("--revision_name", default=None, help="the checkpoint's name in the results (main if none)")
    return parser


def output_path(args) -> Path:
    revision = args.revision_name or "main"
    return args.output_dir / Path(args.model_path_or_name).stem / revision / "zero_shot" / args.backend / "reading"


def read_rows(path: Path):
    """The CSV as the pipeline reads it (items as text, a missing item read as "None"); one line naming
    the file where it is not the reading data's format."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype={"item": str})
    except (OSError, ValueError) as e:
        raise InputError(f"--data_path {path}: cannot be read as a CSV ({e})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"--data_path {path}: not the reading data's format (no column {', '.join(missing)})")
    frame["item"] = frame["item"].fillna("None")
    return frame


@torch.no_grad()
def next_token_probability(model, tokenizer, context: str, token_id: int, device) -> float:
    """p(token | context): the softmax of the last position's logits after the tokenized context."""
    encoded = tokenizer(context, return_tensors="pt")
    inputs = {k: encoded[k].to(device) for k in ("input_ids", "attention_mask") if k in encoded}
    logits = model(**inputs).logits[:, -1, :].cpu()
    return torch.softmax(logits[0], dim=-1)[token_id].item()


def token_ids(tokenizer, text: str) -> list[int]:
    """The ids of `text` tokenized alone, without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def word_probability(model, tokenizer, context: str, word: str, device) -> float:
    """p(word | context) as the pipeline's causal get_p2 computes it (see the module's docstring)."""
    targets = token_ids(tokenizer, word)
    if not targets:
        raise InputError(f"the word {word!r} (after {context[-40:]!r}) tokenizes to nothing")
    probabilities = [next_token_probability(model, tokenizer, context, targets[0], device)]
    if len(targets) == 1:
        return probabilities[0]
    context += tokenizer.decode(targets[0])
    for token in targets[1:]:
        piece = tokenizer.decode(token)
        probabilities.append(next_token_probability(model, tokenizer, context, token_ids(tokenizer, piece)[0], device))
        context += piece
    return np.prod(probabilities)


def surprisal(probability: float, where: str) -> float:
    if probability <= 0:
        raise InputError(f"{where}: the model gives the word probability 0 (its surprisal is infinite)")
    return -math.log(probability)


def fit(frame, measure: str, predictors: tuple[str, ...]) -> dict:
    """The OLS fits of `measure` on the predictors and their pairwise products, without and with the
    surprisal, on the rows where every variable of the fit is given."""
    import statsmodels.formula.api as smf

    terms = list(predictors) + [f"{a}:{b}" for a, b in itertools.combinations(predictors, 2)]
    formula = f"{measure} ~ {' + '.join(terms)}"
    base = smf.ols(formula=formula, data=frame[[measure, *predictors]].dropna()).fit()
    model = smf.ols(formula=formula + " + pred", data=frame[["pred", measure, *predictors]].dropna()).fit()
    return {
        "Predicted variable": measure,
        "Coefficient": float(model.params["pred"]),
        "Number of standard deviations": float(model.tvalues["pred"]),
        "P-value": float(model.pvalues["pred"]),
        "R2": float(model.rsquared),
        "Change in R2 from baseline": float(model.rsquared) - float(base.rsquared),
        "AIC": float(model.aic),
        "Change in AIC from baseline": float(model.aic) - float(base.aic),
        "baseline R2": float(base.rsquared),
        "rows": int(base.nobs),
    }


def explained_share(fit: dict, terms: int) -> float:
    """100 (R2 - R2_base) / (1 - R2_base); one line where the baseline already explains everything."""
    if fit["baseline R2"] == 1:
        raise InputError(
            f"{fit['Predicted variable']}: the baseline predictors fit its {fit['rows']} rows exactly (R2 = 1); "
            f"the regression needs many more rows than its {terms} terms"
        )
    return (fit["R2"] - fit["baseline R2"]) / (1 - fit["baseline R2"]) * 100


# The report's two scores, by the names curves gives them.
SCORES = {"EYE TRACKING SCORE": "eye_tracking", "SELF-PACED READING SCORE": "self_paced_reading"}


def write_results(frame, out: Path) -> dict:
    """The pipeline's files from the rows with their `pred` and `prev_pred`; returns the two scores (by
    SCORES' names) and the report's text (`report`)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "prediction.jsonl").open("w") as f:
        for index, row in frame.iterrows():
            record = {"Index": index, "Sentence": row["item"], "Word": row["word"]}
            print(json.dumps(record | {"Logprob": row["pred"], "Prev_Logprob": row["prev_pred"]}), file=f)
    predictions = [{"id": i, "pred": row["pred"], "prev_pred": row["prev_pred"]} for i, row in frame.iterrows()]
    with (out / "predictions.json").open("w") as f:
        json.dump({"reading": {"predictions": predictions}}, f)
    correlations = frame[["pred", *MEASURES]].corr()["pred"]
    (out / "correlations.txt").write_text("".join(f"{k}\t{v:.4f}\n" for k, v in correlations.items() if k != "pred"))
    report, scores = [], {}
    for name, predictors, file, scored in (
        ("EYE TRACKING SCORE", BASELINE, "predictive_power.jsonl", lambda m: "RT" in m),
        ("SELF-PACED READING SCORE", SPILLOVER, "predictive_power_spillover.jsonl", lambda m: "self" in m),
    ):
        fits = [fit(frame, measure, predictors) for measure in MEASURES]
        with (out / file).open("w") as f:
            for one in fits:
                print(json.dumps({k: v for k, v in one.items() if k not in ("baseline R2", "rows")}), file=f)
        terms = len(predictors) * (len(predictors) + 1) // 2 + 2  # with the intercept and the surprisal
        shares = [explained_share(one, terms) for one in fits if scored(one["Predicted variable"])]
        scores[SCORES[name]] = sum(shares) / len(shares)
        report.append(f"{name}: {scores[SCORES[name]]:.2f}\n")
    (out / "report.txt").write_text("".join(report))
    return scores | {"report": "".join(report)}


def score(args, frame, model, tokenizer, out: Path, quiet: bool = False, device=None) -> dict:
    """Surprisals of every row (resuming from a stopped run's progress file in `out`), then the files;
    returns write_results' scores."""
    from tqdm import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    done = progress.Progress(out, "reading", [args.data_path, args.model_path_or_name])
    preds, prev_preds = [], []
    for index, row in tqdm(frame.iterrows(), total=len(frame), desc="reading", disable=quiet):
        if index not in done:
            where = f"{args.data_path} row {index + 2}"
            pred = surprisal(word_probability(model, tokenizer, row["item"], row["word"], device), where)
            prev = float("nan")
            if isinstance(row["prev_item"], str):
                prev = surprisal(word_probability(model, tokenizer, row["prev_item"], row["prev_word"], device), where)
            done.add(index, [pred, prev])
        preds.append(done[index][0])
        prev_preds.append(done[index][1])
    frame["pred"], frame["prev_pred"] = preds, prev_preds
    result = write_results(frame, out)
    done.finish()
    if not quiet:
        print(result["report"], end="")
    return result


def run(args) -> dict:
    if args.backend != "causal":
        raise UsageError(
            f"--backend {args.backend}: only the causal backend is scored here (this project trains causal LMs)"
        )
    from .zero_shot import load_model_and_processor

    frame = read_rows(args.data_path)
    model, tokenizer = load_model_and_processor(args.model_path_or_name, args.revision_name, pictures=False)
    return score(args, frame, model, tokenizer, output_path(args))


def main(argv: list[str] | None = None) -> dict:
    return run(build_parser().parse_args(argv))
