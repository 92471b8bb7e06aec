"""Caption a clip, an image or a whole set from a trained checkpoint.

    python -m llava.serve.cli --model-path CKPT --video CLIP.mp4
    python -m llava.serve.cli --model-path CKPT --image PHOTO.jpg --prompt "..."
    python -m llava.serve.cli --model-path RUN --model-base BASE_LM --video CLIP.mp4   # adapter-only run
    python -m llava.serve.cli --model-path CKPT --data VAL.json --video-folder DIR --out captions.jsonl

The prompt goes through the model's template (`--version`, default the one it was trained with), exactly as training built
it: a human turn `<video>\\n{prompt}`, and the model writes the answer. The plain template keeps only the
visual placeholder of a human turn (LLaVA's plain template), so there the prompt text is not seen.
Decoding is greedy unless `--temperature` is above 0.

A single caption is printed on stdout, nothing else. A set (`--data`, LLaVA JSON/JSONL: each sample's own
conversation is its prompt) is captioned in batches with a progress bar; every sample becomes one JSON
line `{"id", "caption"}` (plus `"reference"`, the sample's last answer, where it has one). Clips or
images that cannot be read are reported on stderr, listed in `OUT.skipped.jsonl`, and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.templates import get_template, last_answer, trained_version
from ..errors import ArgumentParser, UsageError, check_input_file, check_input_folder, entry_point
from ..generation import caption, single_turn_prompt

logger = logging.getLogger("llava.serve")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def media_pixels(path: str, modality: str, image_processor, config, num_frames: int) -> torch.Tensor:
    """The pixels of one --video or --image as training preprocessed them: a clip at `num_frames` frames,
    an image with the checkpoint's `image_aspect_ratio` ('pad' letterboxes). VideoReadError or
    MediaReadError where the file cannot be read."""
    from ..data.media import load_pixels

    return load_pixels(modality, path, num_frames, image_processor, getattr(config, "image_aspect_ratio", None))


def prompt_options(config, path: str, modality: str, num_frames: int):
    """The turns rewrite of a checkpoint's prompt options (`add_time_instruction`,
    `mm_use_im_start_end`, as its config records them) for one --video or --image at `path`."""
    from ..data.prompts import PromptSettings, with_prompt_options

    prompt = PromptSettings.from_config(config)
    return lambda turns: with_prompt_options(turns, modality, path, prompt, num_frames)


def frames_per_clip(config, requested: int | None = None) -> int:
    """The frames a clip is read at: `requested` (--num-frames), else the checkpoint's `mm_num_frames`,
    else 8. UsageError where `requested` is more than the model takes."""
    most = getattr(config, "mm_num_frames", None)
    frames = requested or most or 8
    if most is not None and frames > most:
        raise UsageError(f"--num-frames {frames}: this model takes at most {most} frames per clip")
    return frames


def media_input(model, tokenizer, image_processor, template, path: str, modality: str, num_frames: int, prompt=""):
    """`(prompt ids, pixels)` of one clip or image (`modality` 'video' or 'image') for a checkpoint, as its
    training built them: media_pixels, and a single human turn `prompt` (after the placeholder) under
    `template` with the checkpoint's prompt_options. VideoReadError or MediaReadError where the file cannot
    be read (a clip's timing too, for a checkpoint trained with --add_time_instruction)."""
    pixels = media_pixels(path, modality, image_processor, model.config, num_frames)
    options = prompt_options(model.config, path, modality, num_frames)
    return single_turn_prompt(template, tokenizer, prompt, modality, options), pixels


class CaptionSet(Dataset):
    """A LLaVA data file as generation inputs: `{"id", "prompt_ids", "pixels", "reference"}` per sample,
    or the dataset's skip record (`"skipped": True`, with the reason) for unreadable media. The data is read
    as the model's training read it (data.dataset.dataset_for_model): its image preprocessing and its prompt
    options."""

    def __init__(self, model, tokenizer, image_processor, data_path, version="plain", **data_settings):
        from ..data.dataset import dataset_for_model

        self.template = get_template(version)
        # The training dataset reads media exactly as training did, and turns bad files into skip records.
        self.dataset = dataset_for_model(model, tokenizer, image_processor, data_path, version, **data_settings)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        if item.get("skipped"):
            return item
        return {
            "id": item["id"],
            "prompt_ids": item["prompt_ids"],
            "pixels": item["pixel_values"],
            "reference": last_answer(self.dataset.samples[index]["conversations"]),
        }


def caption_set(
    model,
    tokenizer,
    image_processor,
    data_path,
    out_path,
    *,
    version="plain",
    video_folder=None,
    image_folder=None,
    num_frames=8,
    batch_size=8,
    num_workers=0,
    max_new_tokens=64,
    temperature=0.0,
    top_p=1.0,
    progress=True,
    samples=None,
) -> dict:
    """Captions every readable sample of `data_path` into `out_path` (JSON lines); returns the counts.
    A full disk or a refused write while writing either file is one SaveError line naming it."""
    from ..errors import saving

    dataset = CaptionSet(
        model,
        tokenizer,
        image_processor,
        data_path,
        version,
        video_folder=video_folder,
        image_folder=image_folder,
        num_frames=num_frames,
        samples=samples,
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    skipped_path = f"{os.path.splitext(out_path)[0]}.skipped.jsonl"
    if os.path.exists(skipped_path):
        os.remove(skipped_path)  # a list from an earlier run would mislead
    written, skipped = 0, []
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with (
        saving(out_path, "captions"),
        open(out_path, "w", encoding="utf-8") as out,
        tqdm(total=len(dataset), desc="captioning", unit="sample", disable=not progress, file=sys.stderr) as bar,
    ):
        for batch in loader:
            bad = [item for item in batch if item.get("skipped")]
            good = [item for item in batch if not item.get("skipped")]
            for item in bad:
                logger.warning("skipping %s (%s): %s", item["id"], item["path"], item["reason"])
                skipped.append({"id": item["id"], "path": item["path"], "reason": item["reason"]})
            if good:
                texts = caption(
                    model,
                    tokenizer,
                    dataset.template,
                    [i["prompt_ids"] for i in good],
                    [i["pixels"] for i in good],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                )
                for item, text in zip(good, texts):
                    line = {"id": item["id"], "caption": text}
                    if item["reference"] is not None:
                        line["reference"] = item["reference"]
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                    written += 1
                out.flush()
            bar.update(len(batch))
            bar.set_postfix(skipped=len(skipped))
    if skipped:
        with saving(skipped_path, "the list of skipped samples"), open(skipped_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in skipped)
        logger.warning(
            "%d of %d samples could not be read and were skipped; listed in %s",
            len(skipped),
            len(dataset),
            skipped_path,
        )
    return {"captioned": written, "skipped": len(skipped), "skipped_list": skipped_path if skipped else None}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m llava.serve.cli",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--model-path",
        required=True,
        help="llava checkpoint folder, or the folder of an adapter-only run (with --model-base)",
    )
    parser.add_argument("--model-base", help="the language model an adapter-only run was trained on")
    parser.add_argument("--vision-tower", help="where the tower of an adapter-only run is now, if it moved")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="a clip to caption")
    source.add_argument("--image", help="an image to caption")
    source.add_argument("--data", help="LLaVA JSON/JSONL set to caption into --out")
    parser.add_argument(
        "--prompt",
        default="",
        help="text of the human turn after the placeholder (default: none, as in caption training)",
    )
    parser.add_argument(
        "--version", help="prompt template (default: the one the checkpoint was trained with, else plain)"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--num-frames", type=int, help="frames per clip (default: the model's mm_num_frames)")
    parser.add_argument("--seed", type=int, default=0, help="for sampling")
    parser.add_argument("--video-folder", help="folder the --data video paths are relative to")
    parser.add_argument("--image-folder", help="folder the --data image paths are relative to")
    parser.add_argument("--out", help="JSON lines output of --data")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding clips for --data")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default: the checkpoint's")
    return parser


def main(argv=None) -> int:
    """The command line; an expected failure raises (InputError, SaveError, ...): `cli` prints it as one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data and not args.out:
        parser.error("--data needs --out FILE.jsonl")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        parser.error("--temperature must be >= 0 and --top-p in (0, 1]")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from . import checks

    # Everything the command line names is checked before the model is loaded.
    config = checks.check_model(args.model_path, args.model_base)
    samples = None
    if args.data:
        samples = checks.check_data(args.data)
        check_input_folder(args.video_folder, "--video-folder")
        check_input_folder(args.image_folder, "--image-folder")
        checks.check_output_file(args.out)
        needs_vision = "caption the clips and images of --data" if checks.has_visual_samples(samples) else None
    else:
        media, flag = (args.video, "--video") if args.video else (args.image, "--image")
        check_input_file(media, flag)
        needs_vision = "caption images or videos"
    checks.require_vision(config, args.model_path, needs_vision)
    from ..model.builder import load_pretrained_model

    torch.manual_seed(args.seed)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path,
        args.model_base,
        device=args.device,
        dtype=DTYPES.get(args.dtype),
        vision_tower=args.vision_tower,
    )
    args.version = args.version or trained_version(model.config)
    try:
        num_frames = frames_per_clip(model.config, args.num_frames)
    except UsageError as e:  # with the parser's pointer to --help
        parser.error(str(e))
    generation = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}

    if args.data:
        counts = caption_set(
            model,
            tokenizer,
            image_processor,
            args.data,
            args.out,
            version=args.version,
            video_folder=args.video_folder,
            image_folder=args.image_folder,
            num_frames=num_frames,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            samples=samples,
            **generation,
        )
        print(
            f"captioned {counts['captioned']} samples into {args.out}; skipped {counts['skipped']}"
            + (f" (listed in {counts['skipped_list']})" if counts["skipped"] else ""),
            file=sys.stderr,
        )
        return 0

    from ..data.media import MediaReadError
    from ..data.video import VideoReadError

    template = get_template(args.version)
    if args.prompt and template.name == "plain":
        logger.warning(
            "the plain template keeps only the visual placeholder of a prompt (as in training): --prompt is not seen"
        )
    modality = "video" if args.video else "image"
    try:
        ids, pixels = media_input(model, tokenizer, image_processor, template, media, modality, num_frames, args.prompt)
    except (VideoReadError, MediaReadError) as e:
        raise checks.media_error(e, media, flag) from e
    print(caption(model, tokenizer, template, [ids], [pixels], **generation)[0])
    return 0


# The command line: an expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status (a
# traceback only for a bug, or with LLAVA_DEBUG=1); main itself raises, for callers in Python.
cli = entry_point(main)


if __name__ == "__main__":
    sys.exit(cli())
