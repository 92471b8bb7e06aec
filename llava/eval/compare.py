"""Runs side by side: conditions and seeds of one model, each task against words seen.

    python -m llava.eval.compare RUN [RUN ...] --out DIR [--condition RUN=NAME ...] [--seed RUN=N ...]

Each RUN is a training run's --output_dir whose checkpoints `python -m llava.eval.curves` has evaluated
(its curves.jsonl). A run's condition and seed come from what it recorded when it started (run.json: the
kinds of input it trained on, `text`, `video+text`, `image+text`; its --seed); `--condition` and `--seed`
override them (RUN as given on the command line, or its folder's name). Writes

- DIR/comparison.csv: `Dataset,Words (Millions),COND_A,COND_B,...`, a row per task and word milestone, the
  mean over a condition's seeds, and `COND_sd` beside a condition with several seeds (the sample standard
  deviation, n - 1); a milestone some seeds lack is averaged over the seeds that have it (`COND_n` says
  how many, where they differ);
- DIR/<dataset>.png: the task against words seen (logarithmic axis), a line per condition with a band of
  one standard deviation over its seeds, chance dashed;
- the matrix on stdout.

Milestones are matched by name across runs (`checkpoint-words-10M` is 10M words in every seed, whatever
the exact count at which each saved it); the final models form a row of their own (`final`), at their mean
word count.
"""

from __future__ import annotations

import csv
import logging
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from ..data.run_record import read_run_record
from ..errors import ArgumentParser, InputError, UsageError, entry_point, saving
from .curve_report import FINAL, aligned_columns, measure_of, measure_order
from .curves import MILESTONE_PREFIX, read_rows

logger = logging.getLogger("llava.eval.compare")

CSV_FILE = "comparison.csv"


@dataclass(frozen=True)
class Run:
    path: str
    condition: str
    seed: object
    rows: list


def overrides(values: list[str] | None, flag: str) -> dict[str, str]:
    found = {}
    for value in values or []:
        run, sep, setting = value.partition("=")
        if not sep or not run or not setting:
            raise UsageError(f"{flag} {value}: expected RUN=VALUE")
        found[run] = setting
    return found


def load_runs(paths: list[str], conditions: dict, seeds: dict) -> list[Run]:
    """Each run with its condition, seed and evaluated rows; one line for a run without results, an
    unknown condition, or two runs of the same condition and seed."""
    runs = []
    for path in paths:
        if not os.path.isdir(path):
            raise InputError(f"RUN {path}: no such folder, expected a training run's --output_dir")
        rows = read_rows(path)
        if not rows:
            raise InputError(f"RUN {path}: no evaluated checkpoint (run python -m llava.eval.curves {path} first)")
        record = read_run_record(path)
        name = Path(os.path.abspath(path)).name
        condition = conditions.get(path, conditions.get(name, record.get("condition")))
        if condition is None:
            raise InputError(f"RUN {path}: its condition is not recorded (run.json); give --condition {name}=NAME")
        seed = seeds.get(path, seeds.get(name, record.get("seed")))
        runs.append(Run(path, str(condition), seed, rows))
    seen = {}
    for run in runs:
        key = (run.condition, str(run.seed))
        if key in seen:
            raise InputError(
                f"RUN {run.path} and {seen[key]} are both condition {run.condition} with seed {run.seed}: "
                "give each its --seed RUN=N"
            )
        seen[key] = run.path
    return runs


def milestone_key(checkpoint: str) -> str:
    return checkpoint.removeprefix(MILESTONE_PREFIX)


def points_of(run: Run) -> dict[tuple[str, str], tuple[int, float]]:
    """(measure, milestone) -> (words, value) of the run's overall rows; the newest row wins."""
    points = {}
    for row in run.rows:
        if row.get("group") is None and row.get("value") is not None and measure_of(row.get("measure")):
            points[(row["measure"], milestone_key(row["checkpoint"]))] = (row["words"], row["value"])
    return points


def nominal_words(milestone: str, counted: list[int]) -> float:
    """A milestone's words in millions: the words its name says (`10M`, `1B`, `100000`), or for the final
    models the mean of their counts."""
    from .babylm.export import milestone_words

    if milestone == FINAL:
        return statistics.fmean(counted) / 1e6
    return milestone_words(milestone) / 1e6


def matrix(runs: list[Run]) -> tuple[list[str], list[dict]]:
    """(conditions in order of appearance, one record per task and milestone: dataset, measure, words,
    and per condition the seeds' values)."""
    conditions = list(dict.fromkeys(run.condition for run in runs))
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    counts: dict[tuple[str, str], list[int]] = {}
    for run in runs:
        for (measure, milestone), (words, value) in points_of(run).items():
            cells.setdefault((measure, milestone), {}).setdefault(run.condition, []).append(value)
            counts.setdefault((measure, milestone), []).append(words)
    records = []
    for measure in measure_order(m for m, _ in cells):
        keys = [k for k in cells if k[0] == measure]
        for key in sorted(keys, key=lambda k: nominal_words(k[1], counts[k])):
            records.append(
                {
                    "dataset": measure_of(measure).column,
                    "measure": measure,
                    "milestone": key[1],
                    "words": nominal_words(key[1], counts[key]),
                    "values": cells[key],
                }
            )
    return conditions, records


def table_rows(conditions: list[str], records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The CSV's header and rows (numbers as text, empty where a condition has no value)."""
    several = {c for c in conditions if max(len(r["values"].get(c, [])) for r in records) > 1}
    uneven = {c for c in several if len({len(r["values"].get(c, [])) for r in records if r["values"].get(c)}) > 1}
    header = ["Dataset", "Words (Millions)"]
    for c in conditions:
        header += [c] + ([f"{c}_sd"] if c in several else []) + ([f"{c}_n"] if c in uneven else [])
    body = []
    for r in records:
        line = [r["dataset"], f"{r['words']:g}"]
        for c in conditions:
            values = r["values"].get(c, [])
            line.append(f"{statistics.fmean(values):.4g}" if values else "")
            if c in several:
                line.append(f"{statistics.stdev(values):.4g}" if len(values) > 1 else "")
            if c in uneven:
                line.append(str(len(values)))
        body.append(line)
    return header, body


def plot(conditions: list[str], records: list[dict], out_dir: Path) -> list[str]:
    """One PNG per dataset; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for measure in dict.fromkeys(r["measure"] for r in records):
        info = measure_of(measure)
        mine = [r for r in records if r["measure"] == measure]
        fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
        for condition in conditions:
            series = [(r["words"], r["values"][condition]) for r in mine if r["values"].get(condition)]
            if not series:
                continue
            words = [w for w, _ in series]
            means = [statistics.fmean(v) for _, v in series]
            sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in series]
            seeds = max(len(v) for _, v in series)
            (line,) = ax.plot(
                words, means, marker="o", markersize=3.5, label=f"{condition} ({seeds} seed{'s' * (seeds > 1)})"
            )
            if seeds > 1:
                low = [m - s for m, s in zip(means, sds)]
                high = [m + s for m, s in zip(means, sds)]
                ax.fill_between(words, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        if info.chance is not None:
            ax.axhline(info.chance, linestyle="--", color="grey", linewidth=1, label=info.chance_label)
        ax.set_xscale("log")
        ax.set_xlabel("words seen (millions)")
        ax.set_ylabel(info.label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
        ax.set_title(info.column, fontsize=10)
        fig.tight_layout()
        png = out_dir / f"{_file_name(info.column)}.png"
        partial = png.with_name(png.name + ".partial.png")
        with saving(str(png), "a comparison plot"):
            fig.savefig(partial)
            os.replace(partial, png)
        plt.close(fig)
        written.append(str(png))
    return written


def _file_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def main(argv=None) -> dict:
    parser = ArgumentParser(prog="python -m llava.eval.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="training runs' --output_dir, evaluated by curves")
    parser.add_argument("--out", required=True, help="the folder for comparison.csv and the plots")
    parser.add_argument(
        "--condition", action="append", metavar="RUN=NAME", help="a run's condition (overrides run.json)"
    )
    parser.add_argument("--seed", action="append", metavar="RUN=N", help="a run's seed (overrides run.json)")
    parser.add_argument("--no-plot", action="store_true", help="leave out the plots")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    runs = load_runs(args.runs, overrides(args.condition, "--condition"), overrides(args.seed, "--seed"))
    conditions, records = matrix(runs)
    header, body = table_rows(conditions, records)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / CSV_FILE
    with saving(str(csv_path), "the comparison table"):
        partial = csv_path.with_name(CSV_FILE + ".partial")
        with open(partial, "w", newline="") as f:
            csv.writer(f).writerows([header, *body])
        os.replace(partial, csv_path)
    plots = [] if args.no_plot else plot(conditions, records, out_dir)
    text = aligned_columns([header, *body])
    print(text, flush=True)
    return {"csv": str(csv_path), "plots": plots, "header": header, "rows": body, "conditions": conditions}


cli = entry_point(main)

if __name__ == "__main__":
    cli()
