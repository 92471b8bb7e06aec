"""What the inference entry points (serve.cli, eval.captions, eval.export_lm, eval.run_llava) check before
they load a model: that the model folder is one we can load, and a llava checkpoint where the input has
images or videos; that input files and folders exist; that the data file is well formed (the training
data checks, every problem listed); that the output can be written. Each failure is one InputError (or
SaveError) line, `WHAT (WHERE)`, naming the flag and the path.

A plain language model (no vision tower) is fine where the input is text only: captions of text-only
samples, export_lm.
"""

from __future__ import annotations

import os

from ..errors import InputError, check_input_file, check_writable


def check_model(model_path: str, model_base: str | None = None) -> dict | None:
    """Checks --model-path (and --model-base) before anything is loaded; returns --model-path's config (None
    for an adapter-only run, whose folder load_pretrained_model checks with its base: it has visual modules)."""
    from ..model.model_folder import check_model_folder

    if model_base is not None:
        check_model_folder(model_base, "--model-base")
        return None
    return check_model_folder(model_path, "--model-path")


def require_vision(config: dict | None, model_path: str, needed_for: str | None) -> None:
    """InputError where the input has images or videos (`needed_for`: what the model must do with them)
    and --model-path (whose `config` check_model returned) is a plain language model."""
    from ..model.model_folder import require_llava_checkpoint

    if needed_for and config is not None:
        require_llava_checkpoint(config, model_path, "--model-path", needed_for)


def check_data(data_path: str, what: str = "--data") -> list[dict]:
    """The validated samples of a LLaVA data file (JSON/JSONL, comma-joined, brace groups, mixtures),
    read by training's own loader; one InputError lists every problem."""
    from ..data.files import split_data_path
    from ..data.samples import load_samples

    for path in split_data_path(data_path):
        check_input_file(path, what)
    return load_samples(data_path)


def has_visual_samples(samples: list[dict]) -> bool:
    return any(sample.get("modality") for sample in samples)


def check_output_file(path: str, what: str = "--out") -> None:
    """An output file: not a folder, and its folder (or the parent it would be made in) writable."""
    if os.path.isdir(path):
        raise InputError(f"{what} is a folder; it names the file to write ({path})")
    check_writable(os.path.dirname(os.path.abspath(path)), f"the folder of {what}")


def check_output_folder(path: str, what: str = "--out") -> None:
    if os.path.isfile(path):
        raise InputError(f"{what} is a file; it names the folder to write into ({path})")
    check_writable(path, what)


def media_error(error: Exception | str, path: str, what: str) -> InputError:
    """A clip or image that cannot be read (VideoReadError, MediaReadError: `PATH: reason`) as one line
    naming the flag."""
    reason = str(error).removeprefix(f"{path}: ")
    if reason.startswith("cannot read image (") and reason.endswith(")"):  # MediaReadError's wording: say it once
        reason = reason[len("cannot read image (") : -1]
    return InputError(f"{what} cannot be read: {reason} ({path})")
