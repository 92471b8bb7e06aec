"""A LoRA run's model written as a plain checkpoint, its adapters merged into the weights: LLaVA's
scripts/merge_lora_weights.py, with its flags.

    python -m llava.model.merge_lora --model-path RUN_DIR --model-base LM --save-model-path OUT

RUN_DIR is a --lora_enable run's output folder (or one of its checkpoints), LM the --model_name_or_path it
trained from. OUT then loads with no flags (`AutoModelForCausalLM.from_pretrained(OUT)` after
`import llava.model`, or `load_pretrained_model(OUT, None, ...)`), with the run's tokenizer and, for a
model with a tower, its image processor.
"""

from __future__ import annotations

import logging
import os
import sys

from ..errors import ArgumentParser, InputError, check_writable, entry_point, saving
from .builder import load_pretrained_model
from .lora import check_lora_folder


def merge_lora(model_path: str, model_base: str, save_model_path: str, vision_tower: str | None = None) -> str:
    """Loads the LoRA run at `model_path` onto `model_base` (load_pretrained_model merges its adapters) and
    saves the merged model, its tokenizer and its image processor in `save_model_path`; returns it. The
    folders are checked before anything is loaded."""
    check_lora_folder(model_path, "--model-path")
    if os.path.isfile(save_model_path):
        raise InputError(f"--save-model-path is a file; it names the folder to write into ({save_model_path})")
    check_writable(save_model_path, "--save-model-path")
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_path, model_base, None, device="cpu", vision_tower=vision_tower
    )
    with saving(save_model_path, "the merged model"):
        model.save_pretrained(save_model_path)
        tokenizer.save_pretrained(save_model_path)
        if image_processor is not None:  # every saved llava model carries its preprocessing
            image_processor.save_pretrained(save_model_path)
    logging.getLogger("llava.model").info("wrote the merged model to %s", save_model_path)
    return save_model_path


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m llava.model.merge_lora", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True, help="the output folder of a --lora_enable run")
    parser.add_argument("--model-base", required=True, help="the language model it trained from")
    parser.add_argument("--save-model-path", required=True, help="the folder to write the merged model into")
    parser.add_argument("--vision-tower", help="where the run's vision tower is now, if it moved")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    merge_lora(args.model_path, args.model_base, args.save_model_path, args.vision_tower)
    return 0


# An expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status; main raises, for callers.
cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(cli())
