"""Checks of a training command line that need no model: run before anything heavy is loaded, so that a
wrong path or a broken data file fails in seconds and in one line, not minutes into a job.

What is checked: --output_dir can be written; --model_name_or_path is a model folder (or hub id) of a
family we load; --vision_tower, --pretrain_mm_mlp_adapter, --video_folder and --image_folder exist where
given, and --load_lora_path is a LoRA run's folder; every file --data_path names is read and every sample validated (its coordinates included), with
every problem listed in the one line (up to data.files.SHOWN_PROBLEMS); data with clips or images has a
vision tower to see them, and its media can be found; data with coordinates has a model with coordinate
tokens; --eval_milestones has milestones to evaluate, and the evaluation's arguments and files are right
(a wrong path would otherwise show only in curves.log, after the first milestone).

`python -m llava.train.preflight ARGS` (the same ARGS as `python -m llava.train.train`) runs only these
checks and prints one line: `ok: ...` with status 0, or `error: ...` with status 1 (2 for a wrong
command line). train.py runs the same checks first, on every rank, and keeps the samples they read.
train_italian_video.sh runs this module once before it launches the ranks.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass

from ..data.dataset import media_path
from ..data.files import data_error
from ..data.grounded_samples import require_coordinate_tokens
from ..data.samples import read_samples
from ..errors import InputError, UsageError, check_input_file, check_input_folder, check_writable, entry_point
from ..model.lora import check_lora_folder
from ..model.model_folder import check_model_folder, config_file_of, is_llava_checkpoint, read_config
from ..modeling.token_packer import validate_grid
from ..modeling.vision_tower import processor_output_size
from .arguments import parse_args
from .milestone_eval import split_arguments
from .milestones import parse_milestones

# A wrong --video_folder makes every clip unreadable: the run would skip them all and stop at the skip
# limit after loading the model. Looking up this many media paths per modality is enough to tell.
MEDIA_LOOKED_UP = 20


@dataclass
class Checked:
    """What the checks read: the validated samples (training keeps them) and the model's config."""

    samples: list[dict]
    model_config: dict

    def summary(self, args) -> str:
        kinds = Counter(s["modality"] for s in self.samples)
        return (
            f"ok: {len(self.samples)} samples ({kinds['video']} video, {kinds['image']} image, "
            f"{kinds[None]} text-only) in {args.data.data_path}; model {args.model.model_name_or_path} "
            f"({self.model_config.get('model_type', 'unknown type')}); {args.training.output_dir} can be written"
        )


def check(args) -> Checked:
    """Runs every check of a run's arguments (arguments.RunArguments); raises a UserError whose message is
    the one line to print. The paths are checked side by side, so that one line names every wrong one (a
    job resubmitted per wrong path costs a queue wait each time)."""
    model_args, vision, data_args, training_args = args.model, args.vision, args.data, args.training
    check_writable(training_args.output_dir, "--output_dir")
    wrong: list[str] = []
    if training_args.eval_milestones and args.lora.lora_enable:
        # The evaluation loads each milestone with no flags; a LoRA run saves adapters.
        raise UsageError(
            "--eval_milestones cannot evaluate a --lora_enable run's milestones (they hold LoRA adapters): "
            "evaluate them after merging each with python -m llava.model.merge_lora"
        )
    if training_args.eval_milestones:
        _collect(wrong, check_eval_milestones, training_args)
    config = _collect(wrong, check_model_folder, model_args.model_name_or_path, "--model_name_or_path")
    tower_config_file = _collect(wrong, check_tower, vision.vision_tower) if vision.vision_tower else None
    _collect(wrong, check_input_file, vision.pretrain_mm_mlp_adapter, "--pretrain_mm_mlp_adapter")
    if args.lora.load_lora_path:
        _collect(wrong, check_lora_folder, args.lora.load_lora_path, "--load_lora_path")
    _collect(wrong, check_input_folder, data_args.video_folder, "--video_folder")
    _collect(wrong, check_input_folder, data_args.image_folder, "--image_folder")
    # A --feature_cache folder not there yet is not an error: train_italian_video.sh fills it after these
    # checks, and training without it encodes every clip online (and warns).
    if data_args.feature_cache and os.path.exists(data_args.feature_cache):
        _collect(wrong, check_input_folder, data_args.feature_cache, "--feature_cache")
    if wrong:
        raise InputError("; ".join(wrong))
    if tower_config_file:
        check_packer_grids(vision, tower_config_file)
    if not data_args.data_path:
        raise UsageError("--data_path is required: the JSON list or JSONL file of training samples")
    coordinates = has_coordinate_tokens(config, args)
    samples, problems = read_samples(data_args.data_path, training_args.seed, numbers=coordinates)
    if problems:
        raise data_error(problems)
    require_coordinate_tokens(samples, coordinates, data_args.data_path)
    present = sorted({s["modality"] for s in samples} - {None})
    if present and not (vision.vision_tower or is_llava_checkpoint(config)):
        counts = " and ".join(f"{sum(s['modality'] == m for s in samples)} {m}" for m in present)
        raise UsageError(
            f"--data_path holds {counts} samples but {model_args.model_name_or_path} has no vision tower: "
            f"give --vision_tower, or train on text-only data ({data_args.data_path})"
        )
    for modality in present:
        _check_media_found(samples, modality, data_args)
    return Checked(samples, config)


def has_coordinate_tokens(config: dict, args) -> bool:
    """The model has coordinate tokens (its config records their bins), or the run gives it them
    (--coordinate_tokens, which LLaVA-ST's --stage 2 sets)."""
    return bool(config.get("mm_coordinate_bins")) or bool(args.model.coordinate_tokens)


def _collect(wrong: list[str], check, *args):
    """`check(*args)`'s result, or None with its one-line message added to `wrong`."""
    try:
        return check(*args)
    except InputError as e:
        wrong.append(str(e))
        return None


def check_eval_milestones(training_args) -> None:
    """--eval_milestones evaluates milestone checkpoints: the run must save some, and the arguments must be
    ones `python -m llava.eval.curves` takes, naming files that exist."""
    if not parse_milestones(training_args.babylm_word_milestones, training_args.word_milestones):
        raise UsageError(
            "--eval_milestones evaluates the word-milestone checkpoints, but this run saves none: "
            "give --word_milestones or --babylm_word_milestones"
        )
    from ..eval import curves  # lm-eval and the plotting are imported only by runs that evaluate

    curves.check_arguments(training_args.output_dir, split_arguments(training_args.eval_milestones))


def check_tower(tower: str) -> str:
    """The config.json of a tower folder, or of a hub id in the local cache (fetched where the hub can be
    reached; with HF_HUB_OFFLINE set, not being cached is an error here, not minutes later)."""
    config_file = config_file_of(tower, "--vision_tower")
    read_config(config_file, "--vision_tower")
    return config_file


def check_packer_grids(settings, tower_config_file: str) -> None:
    """The packer's grids (VisionSettings) tile the tower's patch grid at --num_frames frames: the model
    build refuses them too, but only after the language model and the tower are loaded."""
    if settings.mm_resampler_type != "fast_slow_token_packer":
        return
    try:
        from transformers import AutoImageProcessor

        patch_size = read_config(tower_config_file, "--vision_tower")["patch_size"]
        processor = AutoImageProcessor.from_pretrained(os.path.dirname(tower_config_file))
        side = processor_output_size(processor) // patch_size
    except Exception:  # noqa: BLE001 - a tower described otherwise: the model build checks the grids
        return
    input_grid = (settings.num_frames, side, side)
    for flag, grid in (("--mm_fast_grid", settings.mm_fast_grid), ("--mm_slow_grid", settings.mm_slow_grid)):
        try:
            validate_grid(flag, grid, input_grid)
        except ValueError as e:
            raise UsageError(f"{e} ({settings.vision_tower})") from None


def _check_media_found(samples: list[dict], modality: str, data_args) -> None:
    """Fails when none of the first MEDIA_LOOKED_UP media of a kind exist: the folder is the wrong one
    (some missing ones are skipped and counted during training, as unreadable media are)."""
    looked_up = [media_path(s, data_args) for s in samples if s["modality"] == modality][:MEDIA_LOOKED_UP]
    if any(os.path.exists(path) for path in looked_up):
        return
    flag = "--video_folder" if modality == "video" else "--image_folder"
    folder = getattr(data_args, flag[2:])
    where = f"under {flag} {folder}" if folder else f"(paths relative to the working folder {os.getcwd()}: give {flag})"
    raise InputError(
        f"none of the first {len(looked_up)} {modality} files of --data_path exist {where}; "
        f"is it the right folder? ({looked_up[0]})"
    )


@entry_point
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING, force=True)
    args = parse_args(list(sys.argv[1:] if argv is None else argv), log=False, start_deepspeed=False)
    print(check(args).summary(args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
