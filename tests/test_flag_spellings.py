"""Every command takes each flag in both spellings, `--video-folder` and `--video_folder` (`=VALUE` too),
as the training command does: parsed here on the commands' own parsers (their build_parser). --help
shows each flag once, values are never rewritten, and an unknown flag is named with the nearest one."""

import pytest

from llava import bench
from llava.errors import ArgumentParser, UsageError
from llava.eval import captions, lmms_task, run_llava
from llava.serve import cli as serve

# command -> (its parser, a command line in the spellings it declares)
COMMANDS = {
    "serve.cli": (
        serve.build_parser,
        ["--model-path", "ckpt", "--data", "d.json", "--video-folder", "clips", "--out", "o.jsonl"]
        + ["--max-new-tokens", "8", "--num-frames=4", "--top-p", "0.5", "--prompt=--video_folder"],
    ),
    "eval.captions": (
        captions.build_parser,
        ["--model-path", "ckpt", "--data", "d.json", "--video-folder", "clips", "--max-new-tokens=16", "--json"],
    ),
    # LLaVA's names, declared with underscores
    "eval.run_llava": (
        run_llava.build_parser,
        ["--model-path", "ckpt", "--image-file", "a.png", "--query", "q", "--max_new_tokens", "8", "--top_p=0.9"],
    ),
    "eval.lmms_task": (
        lmms_task.build_parser,
        ["--data", "d.json", "--video-folder", "clips", "--out", "tasks", "--colour-words", "words.json"],
    ),
    "bench": (bench.build_parser, ["--configs", "seed", "--eval-milestones", "--workdir", "work"]),
}


def other_spelling(arg: str) -> str:
    """A flag in the spelling its command does not declare (`--top-p=1` <-> `--top_p=1`); a value as it is."""
    if not arg.startswith("--"):
        return arg
    flag, equals, value = arg.partition("=")
    body = flag[2:]
    return "--" + (body.replace("-", "_") if "-" in body else body.replace("_", "-")) + equals + value


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_both_spellings_parse_alike(command):
    build, declared = COMMANDS[command]
    other = [other_spelling(arg) for arg in declared]
    assert other != declared
    assert vars(build().parse_args(other)) == vars(build().parse_args(declared))
    usage = build().format_usage()  # each flag once, as declared
    flags = {arg.partition("=")[0] for arg in declared if arg.startswith("--")}
    assert all(flag in usage and (other_spelling(flag) == flag or other_spelling(flag) not in usage) for flag in flags)


def test_values_are_never_rewritten():
    args = serve.build_parser().parse_args(COMMANDS["serve.cli"][1])
    assert args.prompt == "--video_folder"  # a value after `=`, though a flag's other spelling
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--video-folder")
    parser.add_argument("rest", nargs="*")
    args = parser.parse_args(["--video_folder", "clips", "--", "--video_folder", "x"])
    assert (args.video_folder, args.rest) == ("clips", ["--video_folder", "x"])  # after `--`: values


def test_unknown_flags_are_named_with_the_nearest_in_either_spelling():
    parser = captions.build_parser()
    hint = "python -m llava.eval.captions --help lists the flags"
    _, unknown = parser.parse_known_args(["--model-path", "m", "--data", "d", "--video_foldr", "v", "--max-new-tokns"])
    assert str(parser.unknown_arguments(unknown)) == (
        f"unknown flags --video_foldr (did you mean --video-folder?), --max-new-tokns (did you mean "
        f"--max-new-tokens?) ({hint})"
    )
    with pytest.raises(UsageError, match=rf"^unrecognized arguments: --video_foldr v \({hint}\)$"):
        parser.parse_args(["--model_path", "m", "--data", "d", "--video_foldr", "v"])
    parser = run_llava.build_parser()
    _, unknown = parser.parse_known_args(COMMANDS["eval.run_llava"][1] + ["--top-q", "1"])
    assert str(parser.unknown_arguments(unknown)).startswith("unknown flag --top-q (did you mean --top_p?)")
