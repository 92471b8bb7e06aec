"""DevBench's comparisons of a model's scores with children's and adults' (the 2025 BabyLM pipeline's
`devbench/comparison`): accuracy and the fitted KL divergence for the picture-choice tasks, RSA for
THINGS; and the files its `devbench/eval.py` writes.

Picture choice (lex-viz_vocab, gram-trog): a trial's four pictures are scored against one word or phrase;
the trial is right when the first picture's score is above each other's (strictly). The model's scores
become choice probabilities by a softmax with an inverse temperature beta (after subtracting the highest
score of the whole table, as the pipeline does); beta is the one in [0.025, 40] that minimises the mean over
trials of KL(human || model), each probability clipped to [1e-10, 1], found as the pipeline finds it (nlopt's
GN_DIRECT_L from 1.0, absolute tolerance 1e-4 on the mean, at most 200 evaluations). lex-viz_vocab fits one
beta per age bin of its human data.

THINGS: the cosine similarity of every two pictures' features, and Spearman's rho between its lower
triangle (below the diagonal) and the human similarity matrix's.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

PICTURES = ("image1", "image2", "image3", "image4")


def choice_table(sims: np.ndarray):
    """(trials, 4, 1) scores -> the pipeline's table: image1..image4, trial (from 1), correct."""
    import pandas as pd

    table = pd.DataFrame(sims.reshape(len(sims), len(PICTURES)), columns=list(PICTURES))
    table["trial"] = np.arange(len(table)) + 1
    table["correct"] = (table["image1"] > table["image2"]) & (table["image1"] > table["image3"])
    table["correct"] &= table["image1"] > table["image4"]
    return table


def choice_probabilities(scores: np.ndarray, beta: float) -> np.ndarray:
    shifted = np.exp(beta * (scores - np.max(scores)))
    return shifted / shifted.sum(axis=1, keepdims=True)


def mean_kl(human: dict[int, np.ndarray], model: dict[int, np.ndarray]) -> float:
    """Mean over the trials in both of KL(human || model), probabilities clipped to [1e-10, 1]."""
    divergences = []
    for trial in sorted(human):  # the pipeline's groupby order
        if trial in model:
            p, q = np.clip(human[trial], 1e-10, 1.0), np.clip(model[trial], 1e-10, 1.0)
            divergences.append(np.sum(p * np.log(p / q)))
    return np.mean(divergences)


def fitted_kl(human_rows, table) -> dict:
    """{'objective': the least mean KL, 'solution': its beta, 'iterations': evaluations used}."""
    import nlopt

    once = human_rows["trial"].value_counts()
    once = set(once[once == 1].index)  # a trial with several human rows is left out, as the pipeline does
    human = {
        int(row["trial"]): row[list(PICTURES)].to_numpy(dtype=float)
        for _, row in human_rows.iterrows()
        if row["trial"] in once
    }
    scores = table[list(PICTURES)].to_numpy(dtype=float)
    trials = table["trial"].tolist()

    def objective(beta, _gradient):
        probabilities = choice_probabilities(scores, beta[0])
        return mean_kl(human, dict(zip(trials, probabilities)))

    opt = nlopt.opt(nlopt.GN_DIRECT_L, 1)
    opt.set_lower_bounds([0.025])
    opt.set_upper_bounds([40])
    opt.set_min_objective(objective)
    opt.set_ftol_abs(1e-4)
    opt.set_maxeval(200)
    solution = opt.optimize([1.0])[0]
    return {"objective": opt.last_optimum_value(), "solution": solution, "iterations": opt.get_numevals()}


def picture_choice_scores(sims: np.ndarray, human, model_name: str, by_age: bool, out_csv: Path):
    """The task's score table (a row per age bin where `by_age`), written to `out_csv` as the pipeline
    writes it; its `accuracy` column is what results.txt prints."""
    import pandas as pd

    table = choice_table(sims)
    groups = list(human.groupby("age_bin")) if by_age else [(None, human)]
    fits = [fitted_kl(rows, table) for _, rows in groups]
    scores = pd.DataFrame(
        {
            **({"age_bin": [age for age, _ in groups]} if by_age else {}),
            "kl": [f["objective"] for f in fits],
            "beta": [f["solution"] for f in fits],
            "iterations": [f["iterations"] for f in fits],
        }
    )
    scores["model"] = model_name
    scores["accuracy"] = table["correct"].mean()
    order = ["model", "age_bin"] if by_age else ["model"]
    scores.sort_values(order).reset_index(drop=True).to_csv(out_csv)
    return scores


def things_rsa(features: np.ndarray, human_similarity: np.ndarray, model_name: str, folder: Path) -> float:
    """Spearman's rho between the lower triangles of the features' cosine similarities and the human
    matrix; writes sem-things_pairwise_sims.npy (what collate_preds reads) and sem-things_scores.csv."""
    from scipy.stats import spearmanr
    from sklearn.metrics.pairwise import cosine_similarity

    similarity = cosine_similarity(features)
    np.save(folder / "sem-things_pairwise_sims.npy", similarity)
    below = np.tril_indices_from(similarity, k=-1)
    rho = spearmanr(human_similarity[below], similarity[below])[0]
    with (folder / "sem-things_scores.csv").open("w") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "rsa"])
        writer.writerow([model_name, rho])
    return rho


def results_text(viz_vocab, trog, things: float) -> str:
    """results.txt as the pipeline writes it (its accuracies are the score tables' columns, printed as
    pandas prints a column)."""
    return (
        f"Visual Vocabulary Accuracy: {viz_vocab['accuracy']}\nTROG Accuracy: {trog['accuracy']}\n"
        f"Things Spearman Correlation: {things}"
    )
