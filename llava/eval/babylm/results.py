"""Scores into the 2025 BabyLM pipeline's results: accuracies grouped by each metadata key, their average
(per UID; entity tracking: per split, each the mean of its UIDs), Spearman's rho for the wug tasks, the
best temperature, and the files it writes (`sentence_zero_shot/run.py` and `compute_results.py`).

Accuracies are percentages. The average over UIDs weighs each UID alike, whatever its number of items.
Entity tracking's UIDs are `<file>_<n>_ops`; its splits are `regular`, `ambiref` and `move_contents` (the
UIDs starting with each), reported beside the UIDs, and its average is the mean of the splits present.
The wug tasks' score is Spearman's rho between the softmax over the item's candidates' scores (the first
candidate's share) and the human ratio. The best temperature is the first with the highest average.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import torch

from .tasks import metadata

ENTITY_TRACKING_SPLITS = ("regular", "ambiref", "move_contents")


class Tally:
    """Correct and total counts per temperature, metadata key and value, in the order values appear."""

    def __init__(self, task: str, temperatures: list[float]):
        self.task, self.temperatures = task, temperatures
        self.counts = {t: {} for t in temperatures}
        self.model_ratios = {t: [] for t in temperatures}
        self.human_ratios: list[float] = []
        self.predictions = {t: defaultdict(list) for t in temperatures}

    def add(self, items: list[dict], scores: dict[float, torch.Tensor]) -> None:
        """One batch: `scores[t]` is (items, candidates)."""
        wug = self.task.startswith("wug")
        if wug:
            self.human_ratios += [item["ratio"] for item in items]
        for t in self.temperatures:
            chosen = torch.max(scores[t], dim=1)[1].tolist()
            shares = torch.softmax(scores[t], dim=1)[:, 0].tolist()
            counts = self.counts[t]
            for item, pick, share in zip(items, chosen, shares):
                prediction = {"id": f"{item['UID']}_{len(self.predictions[t][item['UID']])}"}
                prediction["pred"] = item["sentences" if self.task == "comps" else "completions"][pick]
                if wug:
                    self.model_ratios[t].append(share)
                    prediction["prob"] = share
                else:
                    for key, value in metadata(item).items():
                        count = counts.setdefault(key, {"total": Counter(), "correct": Counter()})
                        count["total"][value] += 1
                        count["correct"][value] += int(pick == item["label"])
                self.predictions[t][item["UID"]].append(prediction)

    def accuracies(self) -> tuple[dict[float, dict], dict[float, float]]:
        """(per temperature: {key: {value: score}}, per temperature: the average)."""
        if self.task.startswith("wug"):
            from scipy.stats import spearmanr

            rho = {t: float(spearmanr(self.model_ratios[t], self.human_ratios)[0]) for t in self.temperatures}
            return {t: {"UID": {"avg": rho[t]}} for t in self.temperatures}, rho
        grouped, average = {}, {}
        for t, counts in self.counts.items():
            grouped[t] = {
                key: {value: 100.0 * count["correct"][value] / count["total"][value] for value in count["total"]}
                for key, count in counts.items()
            }
            per_uid = grouped[t]["UID"]
            if self.task != "entity_tracking":
                average[t] = sum(per_uid.values()) / len(per_uid)
                continue
            splits = []
            for split in ENTITY_TRACKING_SPLITS:
                uids = [uid for uid in per_uid if uid.startswith(split)]
                if uids:
                    per_uid[split] = sum(per_uid[uid] for uid in uids) / len(uids)
                    splits.append(per_uid[split])
            average[t] = sum(splits) / len(splits)
        return grouped, average


def best_temperature(average: dict[float, float]) -> float:
    best, best_score = next(iter(average)), -1.0  # the first, where no score is a number (rho of a constant)
    for t, score in average.items():
        if score > best_score:
            best, best_score = t, score
    return best


def report(task: str, temperature: float, average: float, grouped: dict) -> str:
    """best_temperature_report.txt's text."""
    metric = "SPEARMAN'S RHO" if "wug" in task else "ACCURACY"
    lines = [f"TEMPERATURE: {temperature:.2f}", ""]
    for key, values in grouped.items():
        lines.append(f"### {key.upper()} {metric}")
        lines += [f"{value}: {score:.2f}" for value, score in values.items()]
        lines.append("")
    lines += [f"### AVERAGE {metric}", f"{average:.2f}", ""]
    return "\n".join(lines) + "\n"


def write(output_path: Path, task: str, tally: Tally, save_predictions: bool) -> tuple[float, dict, str]:
    """Writes the report (and predictions.json) of the best temperature; returns (that temperature, the
    average per temperature, the report)."""
    grouped, average = tally.accuracies()
    best = best_temperature(average)
    text = report(task, best, average[best], grouped[best])
    output_path.mkdir(parents=True, exist_ok=True)
    (output_path / "best_temperature_report.txt").write_text(text)
    if save_predictions:
        chosen = {uid: {"predictions": predictions} for uid, predictions in tally.predictions[best].items()}
        (output_path / "predictions.json").write_text(json.dumps(chosen))
    return best, average, text
