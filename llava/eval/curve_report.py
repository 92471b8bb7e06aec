"""What the rows of a run's curves.jsonl measure, and their table and plot (llava.eval.curves writes the
rows; llava.eval.compare reads them too)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import saving

FINAL = "final"  # the run's final model, as rows name its checkpoint


@dataclass(frozen=True)
class Measure:
    label: str  # on the plot's axis
    column: str  # in the table
    chance: float | None  # what a model that learned nothing scores (dashed on the plot)
    chance_label: str = "chance"


MEASURES = {
    "grammar": Measure("minimal pairs accuracy", "grammar", 0.5),
    "caption_loss": Measure("caption loss (nats/token)", "caption loss", None),
    "grounding_gap": Measure("grounding gap (nats/token)", "grounding gap", 0.0, "video-blind (no gap)"),
    "cider": Measure("CIDEr-D", "CIDEr-D", None),
}
# Per-group grammar lines are drawn and tabled up to this many groups (BLiMP has 67: the rows keep them all).
SHOWN_GROUPS = 8
# What a model that learned nothing scores on each BabyLM task, in the pipeline's units (entity tracking's
# items have varying numbers of options: no single line).
BABYLM_CHANCE = {
    "blimp": 50.0, "ewok": 50.0, "comps": 50.0, "winoground": 50.0, "vqa": 12.5,
    "wug_adj": 0.0, "wug_past": 0.0, "entity_tracking": None,
}  # fmt: skip
# DevBench: four pictures per trial; THINGS' RSA is 0 for features unrelated to people's similarities.
DEVBENCH_CHANCE = {"lex-viz_vocab": 25.0, "gram-trog": 25.0, "sem-things": 0.0}


def measure_of(name: str) -> Measure | None:
    """The measure a row names: a fixed one, or a BabyLM task's (`babylm:TASK:FOLDER`, the reading
    task's and DevBench's `babylm:TASK:SCORE`); None for others."""
    if name in MEASURES:
        return MEASURES[name]
    parts = name.split(":") if isinstance(name, str) else []
    if len(parts) != 3 or parts[0] != "babylm":
        return None
    task, part = parts[1], parts[2]
    if task in BABYLM_CHANCE:
        unit = "Spearman's rho" if task.startswith("wug") else "%"
        return Measure(f"{part} ({unit})", part, BABYLM_CHANCE[task])
    if task == "reading" and part in ("eye_tracking", "self_paced_reading"):
        return Measure(f"{part} (% of R2 left)", part, 0.0, "no gain")
    if task == "devbench" and part in DEVBENCH_CHANCE:
        unit = "RSA rho" if part == "sem-things" else "%"
        return Measure(f"{part} ({unit})", part, DEVBENCH_CHANCE[part])
    return None


def measure_order(names) -> list[str]:
    """The fixed measures in their order, then the BabyLM tasks' by name."""
    names = set(names)
    return [m for m in MEASURES if m in names] + sorted(n for n in names if n not in MEASURES and measure_of(n))


def curve_points(rows: list[dict]) -> dict[tuple[str, str | None], list[tuple[int, float]]]:
    """(measure, group) -> [(words, value)] sorted by words; the newest row wins for a repeated point."""
    latest = {}
    for row in rows:
        if row.get("value") is not None and measure_of(row.get("measure")) is not None:
            latest[(row["measure"], row.get("group"), row["checkpoint"], row["words"])] = row["value"]
    points = {}
    for (measure, group, _, words), value in latest.items():
        points.setdefault((measure, group), []).append((words, value))
    return {key: sorted(values) for key, values in points.items()}


def shown_groups(points) -> list[str]:
    groups = sorted({g for (m, g) in points if m == "grammar" and g is not None})
    return groups if len(groups) <= SHOWN_GROUPS else []


def format_table(rows: list[dict]) -> str:
    """Checkpoints by words seen, one column per measure (and per grammar group, when there are few)."""
    latest = {}
    for row in rows:
        latest[(row["checkpoint"], row["words"], row["measure"], row.get("group"))] = row.get("value")
    checkpoints = sorted({(c, w) for c, w, _, _ in latest}, key=lambda cw: (cw[1], cw[0] == FINAL))
    points = curve_points(rows)
    columns = []
    for measure in measure_order(m for m, _ in points):
        if (measure, None) in points:
            columns.append((measure, None))
            if measure == "grammar":
                columns += [("grammar", g) for g in shown_groups(points)]
    headers = ["words", "checkpoint"] + [measure_of(m).column if g is None else g for m, g in columns]

    def cell(value, measure):
        if value is None:
            return "n/a"
        return (
            f"{value:.1%}"
            if measure == "grammar"
            else f"{value:+.3f}"
            if measure == "grounding_gap"
            else f"{value:.2f}"
            if measure.startswith("babylm:")
            else f"{value:.3f}"
        )

    body = [
        [f"{words:,}", name] + [cell(latest.get((name, words, m, g)), m) for m, g in columns]
        for name, words in checkpoints
    ]
    chance = ["chance", ""] + [
        "" if measure_of(m).chance is None else cell(measure_of(m).chance, m) for m, _ in columns
    ]
    return aligned_columns([headers, *body, chance], left_columns=2)


def aligned_columns(rows: list[list[str]], left_columns: int = 1) -> str:
    """Rows of cells as text columns two spaces apart: the first `left_columns` flush left (names), the
    others flush right (numbers)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < left_columns else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    )


def plot(rows: list[dict], png: str, title: str) -> None:
    """One panel per measure against words seen (log axis); chance dashed; written whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = curve_points(rows)
    measures = [m for m in measure_order(m for m, _ in points) if (m, None) in points]
    if not measures:
        return
    columns = min(len(measures), 2)
    lines = math.ceil(len(measures) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5.5 * columns, 3.6 * lines), dpi=120, squeeze=False)
    for ax, measure in zip(axes.flat, measures):
        label, chance = measure_of(measure).label, measure_of(measure).chance
        series = [(None, "all pairs" if measure == "grammar" else label)]
        if measure == "grammar":
            series += [(g, g) for g in shown_groups(points)]
        for group, name in series:
            words, values = zip(*points[(measure, group)])
            style = {"linewidth": 2.2, "color": "black"} if group is None else {"linewidth": 1.2, "alpha": 0.8}
            ax.plot(words, values, marker="o", markersize=3.5, label=name, **style)
        if chance is not None:
            ax.axhline(chance, linestyle="--", color="grey", linewidth=1, label=measure_of(measure).chance_label)
        if measure == "grammar":
            ax.set_ylim(0.0, 1.03)  # room for a line at 100%
        ax.set_xscale("log")
        ax.set_xlabel("words seen")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(measures) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    partial = png + ".partial.png"
    with saving(png, "the curve plot"):
        fig.savefig(partial)
        os.replace(partial, png)
    plt.close(fig)
