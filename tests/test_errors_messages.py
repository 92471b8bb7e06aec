"""The pieces every one-line error is made of (llava/errors.py): the listing of a few items and how many
more, the checks of input paths that every command shares, and the line for flags a parser does not know."""

import os

import pytest

from llava.errors import (
    ArgumentParser,
    InputError,
    MissingInputFile,
    UsageError,
    check_input_file,
    check_input_folder,
    listing,
)


def test_a_listing_names_the_first_items_and_counts_the_rest():
    assert listing(["a", "b"], 3) == "a; b"
    assert listing(["a", "b", "c"], 3) == "a; b; c"
    assert listing(["a", "b", "c", "d", "e"], 3) == "a; b; c; and 2 more"
    assert listing(iter(["a", "b", "c"]), 2, ", ") == "a, b and 1 more"  # a comma list: no comma before "and"
    assert listing([1, 2], 1, ", ") == "1 and 1 more"


def test_input_paths_are_checked_in_one_line_each(tmp_path):
    folder, file = tmp_path / "folder", tmp_path / "file.json"
    folder.mkdir()
    file.write_text("[]")
    check_input_file(str(file), "--data")
    check_input_folder(str(folder), "--video-folder")
    check_input_file(None, "--data")  # not given: nothing to check
    check_input_folder("", "--video-folder")
    with pytest.raises(MissingInputFile, match=rf"^--data file does not exist \({tmp_path}/nope\)$"):
        check_input_file(str(tmp_path / "nope"), "--data")
    with pytest.raises(InputError, match=rf"^--data is a folder, not a file \({folder}\)$"):
        check_input_file(str(folder), "--data")
    with pytest.raises(MissingInputFile, match=rf"^--video-folder folder does not exist \({tmp_path}/nope\)$"):
        check_input_folder(str(tmp_path / "nope"), "--video-folder")
    with pytest.raises(InputError, match=rf"^--video-folder is a file, not a folder \({file}\)$"):
        check_input_folder(str(file), "--video-folder")
    # Something that exists but is neither (a device): not a folder, and not said to be missing.
    with pytest.raises(InputError, match=r"^--video-folder is a file, not a folder \(/dev/null\)$") as caught:
        check_input_folder(os.devnull, "--video-folder")
    assert not isinstance(caught.value, FileNotFoundError)


def test_flags_a_parser_left_over_are_named_with_the_nearest_known_one():
    parser = ArgumentParser(prog="python -m tool")
    parser.add_argument("--learning_rate")
    _, unknown = parser.parse_known_args(["--lerning_rate", "1", "--bogus=2"])
    error = parser.unknown_arguments(unknown)
    assert isinstance(error, UsageError) and error.exit_code == 2
    assert str(error) == (
        "unknown flags --lerning_rate (did you mean --learning_rate?), --bogus (python -m tool --help lists the flags)"
    )
    assert str(parser.unknown_arguments(["stray", "values"])) == (
        "unexpected arguments stray values (python -m tool --help lists the flags)"
    )
    with pytest.raises(UsageError, match=r"^argument --learning_rate: expected one argument \(python -m tool --help"):
        parser.parse_args(["--learning_rate"])
