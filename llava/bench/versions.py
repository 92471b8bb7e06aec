"""Two code versions timed side by side in one run: `python -m llava.bench.versions --before REV [--after
REV]` (after: this working tree, uncommitted changes included).

Each version runs in a process of its own (llava/bench/version_probe.py, the same timing code for both,
the version's own model, data set, collator and loader), built from a git worktree of the revision in the
work folder; the two answer the same requests in turn (before, after, after, before, ...), so that a slow
spell of a shared machine weighs on both alike. Rows: the cached training step and the language model's
own step at the configuration's shapes, the cached step's share of that bound, and the cached data loader
alone at the recipe's batch, without workers and with them. CPU only (the probe's device).

Versions from the single-module benchmark (llava/bench.py, 7d067a0 and its neighbours) on are supported.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from .. import errors
from ..errors import UsageError
from .cli import DEFAULT_WORKERS, count_at_least
from .configs import SHAPES

PROBE = Path(__file__).with_name("version_probe.py")
ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        said = result.stderr.strip().splitlines()
        raise UsageError(f"git {' '.join(args)}: {said[-1] if said else f'status {result.returncode}'}")
    return result.stdout.strip()


def checkout(revision: str | None, workdir: Path) -> tuple[Path, str]:
    """The folder holding `revision`'s code (a detached worktree under `workdir`) and its label; None is
    this working tree."""
    if revision is None:
        dirty = bool(_git("status", "--porcelain"))
        return ROOT, _git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    except UsageError:
        raise UsageError(f"{revision!r} names no commit of the checkout at {ROOT}") from None
    short = _git("rev-parse", "--short", commit)
    folder = workdir / "versions" / short
    if not (folder / "llava").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        _git("worktree", "prune")
        _git("worktree", "add", "--detach", str(folder), commit)
    return folder, short


class Version:
    """A probe process running one version's code."""

    def __init__(self, label: str, code: Path, config: str, workdir: Path, workers: int):
        self.label = label
        env = dict(os.environ, PYTHONPATH=str(code))
        command = [sys.executable, str(PROBE), "--config", config, "--workdir", str(workdir), "--workers", str(workers)]
        print(f"[{label}] building its {config} model and feature cache in {workdir}", flush=True)
        self.process = subprocess.Popen(
            command, cwd=code, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._read()  # {"ready": true}

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise errors.InputError(
                f"the probe of {self.label} ended (status {code}) before answering; see its output above"
            )
        return json.loads(line)

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def alternate(versions: list[Version], repeats: int, **request) -> list[list[dict]]:
    """Each version's answers to `repeats` rounds of `request`, the order reversed every round."""
    answers = [[] for _ in versions]
    for r in range(repeats):
        order = list(enumerate(versions))
        for i, version in order if r % 2 == 0 else order[::-1]:
            answers[i].append(version.ask(**request))
    return answers


def measure(versions: list[Version], repeats: int, workers: int) -> list[tuple[str, list[str]]]:
    """The rows: (measure, one value per version)."""
    from .data_path import LOADER_BATCHES, RECIPE_BATCH  # torch with it: not for --help

    rows = []
    for version in versions:  # one warm-up step of each kind
        version.ask(measure="cached_step")
        version.ask(measure="lm_step")
    steps = {}
    for kind in ("cached_step", "lm_step"):
        steps[kind] = [
            statistics.median(a["seconds"] for a in answers) for answers in alternate(versions, repeats, measure=kind)
        ]
    rows.append(("train step cached (s per batch)", [f"{s:.3f}" for s in steps["cached_step"]]))
    rows.append(("train step, language model alone (s per batch)", [f"{s:.3f}" for s in steps["lm_step"]]))
    shares = [lm / cached for lm, cached in zip(steps["lm_step"], steps["cached_step"])]
    rows.append(("the cached step's share of the bound (LM step / cached step)", [f"**{s:.0%}**" for s in shares]))
    for n in sorted({0, workers}):
        request = dict(measure="loader", workers=n, batch=RECIPE_BATCH, batches=LOADER_BATCHES["cached"])
        rates = []
        for answers in alternate(versions, repeats, **request):
            rates.append(statistics.median(a["clips"] / a["seconds"] for a in answers))
        rows.append(
            (f"data loader alone, cached (batch {RECIPE_BATCH}, {n} workers), clips/s", [f"{r:.0f}" for r in rates])
        )
    return rows


def write_markdown(
    path: Path, config: str, repeats: int, labels: list[str], rows, argv: str, machine: str, load: str
) -> None:
    import datetime

    lines = [
        "# Two versions side by side",
        "",
        f"`python -m llava.bench.versions {argv}`".replace(" `", "`"),
        "",
        f"Measured {datetime.date.today().isoformat()} on: {machine}. {load}",
        f"Configuration {config}; medians of {repeats} alternating rounds; each version in its own process, timed by",
        "llava/bench/version_probe.py (the same step and loader code for both).",
        "",
        "| measure | " + " | ".join(labels) + " |",
        "| --- |" + " --- |" * len(labels),
    ]
    lines += [f"| {what} | " + " | ".join(values) + " |" for what, values in rows]
    text = "\n".join(lines) + "\n"
    with errors.saving(str(path), "the comparison table", needed=len(text.encode())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> list:
    parser = errors.ArgumentParser(prog="python -m llava.bench.versions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="a git revision (commit, tag, branch)")
    parser.add_argument("--after", help="a git revision (default: this working tree, uncommitted changes included)")
    parser.add_argument("--config", default="seed", choices=sorted(SHAPES))
    parser.add_argument("--repeats", type=count_at_least(1), default=5, help="alternating rounds per measure (median)")
    parser.add_argument(
        "--workers", type=count_at_least(0), default=DEFAULT_WORKERS, help="the loader's workers (the recipe's)"
    )
    parser.add_argument("--workdir", default="bench_work", help="models, clips and worktrees (kept between runs)")
    parser.add_argument("--output", default=os.path.join("docs", "benchmark_versions.md"))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    errors.check_writable(str(workdir), "--workdir")
    code = {"before": checkout(args.before, workdir), "after": checkout(args.after, workdir)}
    import torch

    from .report import describe_load, describe_machine

    machine, load_at_start = describe_machine(torch.device("cpu")), os.getloadavg()
    versions = []
    try:
        for when in ("before", "after"):
            folder, label = code[when]
            # This working tree uses the work folder itself (its assets and cache are the benchmark's own);
            # a worktree gets one of its own, its assets built and its cache filled by its own code.
            own = workdir if folder == ROOT else workdir / "versions" / f"{label}-work"
            versions.append(Version(f"{when}: {label}", folder, args.config, own, args.workers))
        rows = measure(versions, args.repeats, args.workers)
    finally:
        for version in versions:
            version.close()
    labels = [v.label for v in versions]
    for what, values in rows:
        print(f"  {what}: " + " | ".join(f"{label} {value}" for label, value in zip(labels, values)), flush=True)
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    load = describe_load(load_at_start, os.getloadavg())
    write_markdown(Path(args.output), args.config, args.repeats, labels, rows, shown, machine, load)
    print(f"written to {args.output}", flush=True)
    return rows


if __name__ == "__main__":
    errors.entry_point(main)()
