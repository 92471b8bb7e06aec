"""LLaVA's quick start: ask a checkpoint about an image (or a clip) from Python or the command line.

    python -m llava.eval.run_llava --model-path CKPT --image-file photo.jpg --query "Cosa c'è?"
    python -m llava.eval.run_llava --model-path CKPT --image-file clip.mp4 --query "Descrivi il video."

    from llava.eval.run_llava import eval_model
    args = type("Args", (), {"model_path": CKPT, "model_base": None, "model_name": None, "query": Q,
                             "conv_mode": None, "image_file": F, "sep": ",", "temperature": 0,
                             "top_p": None, "num_beams": 1, "max_new_tokens": 512})()
    eval_model(args)   # prints the answer (and returns it)

The arguments and defaults are LLaVA's. `--image-file` takes several files joined by `--sep`, each an
image (a path or an http(s) address) or a clip (by its extension: .mp4, .webm, ...), which is sampled to
the model's frame count. The visual block goes where the query says `<image-placeholder>`, else before
the query. `--conv-mode` defaults to the template the checkpoint was trained with (`conv_template` in its
config, else `plain`); the plain template keeps only the visual block of a prompt, as in training.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys

import torch

from ..constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_PLACEHOLDER
from ..conversation import conv_templates
from ..data.templates import get_template, trained_version
from ..errors import ArgumentParser, check_input_file, entry_point
from ..generation import caption
from ..mm_utils import get_model_name_from_path, process_images, tokenizer_image_token

logger = logging.getLogger("llava.eval.run_llava")

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ts")


def image_parser(args) -> list[str]:
    return [f for f in args.image_file.split(getattr(args, "sep", ",") or ",") if f]


def load_image(image_file: str):
    """A PIL image from a path or an http(s) address."""
    from PIL import Image

    if image_file.startswith(("http://", "https://")):
        from urllib.request import urlopen

        with urlopen(image_file, timeout=60) as response:
            return Image.open(io.BytesIO(response.read())).convert("RGB")
    return Image.open(image_file).convert("RGB")


def load_visual(path: str, image_processor, config) -> torch.Tensor:
    """(T, 3, S, S) pixels of a clip at the model's frame count, or (1, 3, S, S) of an image; one InputError
    line naming --image-file where the file cannot be read."""
    from ..data.media import load_clip
    from ..data.video import VideoReadError
    from ..serve.checks import media_error

    if path.lower().endswith(VIDEO_EXTENSIONS):
        try:
            return load_clip(path, image_processor, config.mm_num_frames)
        except VideoReadError as e:
            raise media_error(e, path, "--image-file") from e
    try:
        image = load_image(path)
    except (OSError, ValueError) as e:  # PIL: UnidentifiedImageError (an OSError), truncated or bad data
        raise media_error(f"{type(e).__name__}: {e}", path, "--image-file") from e
    return process_images([image], image_processor, config)


def with_visual_block(query: str, count: int, use_im_start_end: bool) -> str:
    """The query with one visual block per input: where `<image-placeholder>` stands, else before it."""
    block = (
        DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN if use_im_start_end else DEFAULT_IMAGE_TOKEN
    )
    if IMAGE_PLACEHOLDER in query:
        return query.replace(IMAGE_PLACEHOLDER, block)
    return "".join(f"{block}\n" for _ in range(count)) + query


def conversation_mode(config, requested: str | None) -> str:
    trained = trained_version(config)
    if requested and requested != trained:
        logger.warning(
            "the checkpoint was trained with conv-mode %s, but %s was asked for; using %s",
            trained,
            requested,
            requested,
        )
        return requested
    return trained


def eval_model(args) -> str:
    """LLaVA's `eval_model(args)`: loads `args.model_path`, answers `args.query` about `args.image_file`,
    prints the answer and returns it."""
    from ..model.builder import load_pretrained_model
    from ..serve import checks

    model_base = getattr(args, "model_base", None)
    files = image_parser(args)
    config = checks.check_model(args.model_path, model_base)
    for path in files:
        if not path.startswith(("http://", "https://")):
            check_input_file(path, "--image-file")
    checks.require_vision(config, args.model_path, "look at --image-file" if files else None)
    model_name = getattr(args, "model_name", None) or get_model_name_from_path(args.model_path)
    tokenizer, model, image_processor, _ = load_pretrained_model(args.model_path, model_base, model_name)
    visuals = [load_visual(f, image_processor, model.config) for f in files]
    mode = conversation_mode(model.config, getattr(args, "conv_mode", None))
    if mode == "plain" and args.query.replace(IMAGE_PLACEHOLDER, "").strip():
        logger.warning(
            "the plain template keeps only the visual block of a prompt (as in training): the query text is not seen"
        )
    conv = conv_templates[mode].copy()
    conv.append_message(
        conv.roles[0], with_visual_block(args.query, len(visuals), bool(model.config.mm_use_im_start_end))
    )
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer)
    temperature = getattr(args, "temperature", 0.2) or 0.0
    answer = caption(
        model,
        tokenizer,
        get_template(mode),
        [ids],
        [visuals or None],
        max_new_tokens=getattr(args, "max_new_tokens", 512),
        temperature=temperature,
        top_p=getattr(args, "top_p", None),
        num_beams=getattr(args, "num_beams", 1) or 1,
    )[0]
    print(answer)
    return answer


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m llava.eval.run_llava",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-path", required=True, help="a llava checkpoint folder (or an adapter-only run, with --model-base)"
    )
    parser.add_argument("--model-base", default=None, help="the language model an adapter-only run was trained on")
    parser.add_argument("--image-file", required=True, help="image or clip files (or image addresses), joined by --sep")
    parser.add_argument("--query", required=True)
    parser.add_argument(
        "--conv-mode", default=None, help="conversation template (default: the one the checkpoint trained with)"
    )
    parser.add_argument("--sep", default=",")
    parser.add_argument("--temperature", type=float, default=0.2, help="0: greedy (LLaVA's default is 0.2)")
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0, help="for sampling")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    torch.manual_seed(args.seed)
    eval_model(args)  # checks the model folder and every local --image-file before loading the model
    return 0


# The command line: an expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status (a
# traceback only for a bug, or with LLAVA_DEBUG=1); main itself raises, for callers in Python.
cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(cli())
