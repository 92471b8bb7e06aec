"""The command line of `python -m llava.bench`: its flags, checked before anything is built (a run takes
minutes), then the table of every configuration, or the --eval-milestones measurement instead."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import errors
from ..errors import InputError, UsageError
from .configs import SHAPES, describe_shapes

if TYPE_CHECKING:
    import torch

# The recipe's dataloader_num_workers (recipes/italian_video.yaml; tests/test_bench.py checks that they agree).
DEFAULT_WORKERS = 4


def count_at_least(minimum: int):
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def parse_configs(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown or not names:
        what = f"unknown configuration {unknown[0]!r}" if unknown else "no configuration named"
        raise UsageError(f"--configs {text!r}: {what} (choose from {', '.join(SHAPES)})")
    return names


def parse_device(text: str | None) -> torch.device:
    """The --device (when not given: CUDA where a GPU is visible, else the CPU), refused now if this
    machine cannot run it (not after minutes of building assets)."""
    # Imported here, not with the module: --help and a wrong --configs answer without torch's seconds.
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"--device {text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise UsageError(f"--device {text}: no CUDA device is available (torch {torch.__version__}, {build})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_output(output: str) -> None:
    if os.path.isdir(output):
        raise InputError(
            f"--output {output} is a folder; name the table's file, e.g. {os.path.join(output, 'benchmarks.md')}"
        )
    # A path that does not exist yet is checked by the folder it would be made in (check_writable walks up).
    target = os.path.dirname(os.path.abspath(output)) if os.path.exists(output) else output
    errors.check_writable(target, "--output")


def build_parser() -> errors.ArgumentParser:
    # The package's docstring says what the benchmark measures; its first paragraph is the command's description.
    package_doc = sys.modules[__package__].__doc__
    parser = errors.ArgumentParser(prog="python -m llava.bench", description=package_doc.split("\n\n")[0])
    parser.add_argument("--configs", default="seed,demo", help="comma-separated: seed, demo")
    parser.add_argument(
        "--repeats", type=count_at_least(1), default=3, help="timed repetitions of each measurement (median)"
    )
    parser.add_argument(
        "--workers", type=count_at_least(0), default=DEFAULT_WORKERS, help="data loader workers (the recipe's)"
    )
    # Relative to the working directory, not to the package: an installed package's folder is no place to write.
    parser.add_argument("--workdir", default="bench_work", help="models and clips (kept between runs)")
    parser.add_argument("--output", default=os.path.join("docs", "benchmarks.md"), help="the table in Markdown")
    parser.add_argument("--device")  # default: CUDA where available (parse_device)
    parser.add_argument(
        "--eval-milestones",
        action="store_true",
        help="instead of the table: the training's steps/s without and with --eval_milestones, side by side "
        "(llava/bench/eval_milestones.py; printed only)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, force=True)
    # Every mistake on the command line is refused before the first model is built: a run takes minutes.
    configs = parse_configs(args.configs)
    device = parse_device(args.device)
    errors.check_writable(args.workdir, "--workdir")
    if not args.eval_milestones:
        check_output(args.output)
    from .report import describe_load, describe_machine, write_markdown

    machine = describe_machine(device)
    print(f"machine: {machine}", flush=True)
    load_at_start = os.getloadavg()
    if args.eval_milestones:
        from . import eval_milestones

        summary = eval_milestones.run(Path(args.workdir), device, args.repeats)
        print(describe_load(load_at_start, os.getloadavg()), flush=True)
        return summary
    from .measurements import measure

    results = {}
    for name in configs:
        print(f"[{name}] {describe_shapes(SHAPES[name])}", flush=True)
        results[name] = measure(SHAPES[name], Path(args.workdir), device, args.repeats, args.workers)
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    load = describe_load(load_at_start, os.getloadavg())
    print(load, flush=True)
    write_markdown(Path(args.output), machine, results, shown, load)
    print(f"written to {args.output}", flush=True)
    return results
