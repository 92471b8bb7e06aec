"""Export the language model of a llava checkpoint as a stock transformers model.

    python -m llava.eval.export_lm --model-path CKPT --out DIR [--model-base BASE_LM]

writes DIR with the family's stock causal-LM class (GPT-2: `GPT2LMHeadModel`, `model_type` "gpt2"; Llama:
`LlamaForCausalLM`; ...), its tokenizer and its generation config: what the BabyLM evaluation pipeline
loads with `AutoModelForCausalLM.from_pretrained(DIR)`, without this package. Every visual weight (tower,
resampler, projector, spatial/temporal embeddings), the coordinate tables of a model with coordinate tokens
and every `mm_*` config key are dropped; the text-only logits are those of the multimodal model over its
words (checked before saving). The tokenizer is the checkpoint's: a coordinate model's bin tokens stay in
it, ids past the stock model's vocabulary that no text-only task writes.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

from ..errors import ArgumentParser, entry_point, saving
from ..model.builder import LLAVA_TO_STOCK, load_pretrained_model
from ..modeling.adapter_weights import ADAPTER_MODULES
from ..modeling.coordinate_tokens import placeholder_ids

logger = logging.getLogger("llava.export")

# What a stock language model has no place for: the visual modules and the coordinate tables (whose bins a
# text-only evaluation never reads or writes).
VISUAL_MODULES = ("vision_tower", *ADAPTER_MODULES, "mm_coordinates")
# Config keys never copied: bookkeeping that from_pretrained/save_pretrained write themselves, and the
# llava model type and architectures (the stock class brings its own).
_NOT_COPIED = {"model_type", "architectures", "transformers_version", "_name_or_path", "auto_map"}


def stock_model_type(model) -> str:
    llava_type = model.config.model_type
    if llava_type not in LLAVA_TO_STOCK:
        raise ValueError(f"no stock transformers class is known for model_type {llava_type!r}")
    return LLAVA_TO_STOCK[llava_type]


def stock_config(model):
    """The llava config as the family's stock config: no `mm_*` key, the stock `model_type`."""
    from transformers import AutoConfig

    stock_type = stock_model_type(model)
    config_class = type(AutoConfig.for_model(stock_type))
    known = set(config_class().to_dict())
    values = model.config.to_dict()
    kept = {k: v for k, v in values.items() if k in known and k not in _NOT_COPIED and not k.startswith("mm_")}
    dropped = sorted(k for k in values if k not in kept and k not in _NOT_COPIED)
    logger.info("config keys left out of the %s config: %s", stock_type, ", ".join(dropped) or "none")
    config = config_class(**kept)
    config.use_cache = True  # training turns the cache off; inference wants it
    config.architectures = None
    return config


def language_model_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights without the visual modules, under the stock class's names."""
    inner = model.get_model()
    prefix = next(name for name, module in model.named_modules() if module is inner)
    visual = tuple(f"{prefix}.{name}." if prefix else f"{name}." for name in VISUAL_MODULES)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(visual)}


def to_stock(model):
    """A stock transformers causal LM holding `model`'s language model weights (same dtype, on the CPU)."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = stock_config(model)
    dtype = model.get_input_embeddings().weight.dtype
    stock = AutoModelForCausalLM.from_config(config, dtype=dtype)
    weights = {k: v.detach().to("cpu") for k, v in language_model_state_dict(model).items()}
    missing, unexpected = stock.load_state_dict(weights, strict=False)
    # Tied heads may appear on one side only; every other difference is an error.
    tied = set(getattr(stock, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(
            f"the language model does not map onto {type(stock).__name__}: missing {missing}, unexpected {unexpected}"
        )
    stock.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        stock.generation_config = GenerationConfig.from_dict(model.generation_config.to_dict())
    return stock.eval()


@torch.no_grad()
def check_same_logits(model, stock, vocab_size: int, length: int = 16, atol: float = 1e-4) -> float:
    """Max |difference| of the two models' logits on a random text-only sequence; raises beyond `atol`."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (1, length), generator=generator)
    device = next(model.parameters()).device
    b = stock(input_ids=ids).logits.float()
    a = model(input_ids=ids.to(device)).logits.float().cpu()[..., : b.shape[-1]]  # without coordinate bins
    diff = float((a - b).abs().max())
    if diff > atol:
        raise RuntimeError(f"the exported model's logits differ from the multimodal model's by {diff:.3g} (> {atol})")
    return diff


def load_for_export(model_path: str, out: str, model_base: str | None, vision_tower: str | None):
    """(tokenizer, model) of the checkpoint, on the CPU; the model folder and `out` checked first, before
    anything is loaded (a plain language model passes too: its visual part is empty)."""
    from ..serve.checks import check_model, check_output_folder

    check_model(model_path, model_base)
    check_output_folder(out)
    tokenizer, model, _, _ = load_pretrained_model(model_path, model_base, device="cpu", vision_tower=vision_tower)
    return tokenizer, model


def weight_bytes(model) -> int:
    """The weights' bytes, each storage once (a tied head shares the embeddings'): about what
    save_pretrained writes."""
    return sum({t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}.values())


def add_source_arguments(parser) -> None:
    """The flags that name the checkpoint to export and where it goes (every export command's)."""
    parser.add_argument(
        "--model-path", required=True, help="llava checkpoint (or an adapter-only run, with --model-base)"
    )
    parser.add_argument("--model-base", help="the language model of an adapter-only run")
    parser.add_argument("--vision-tower", help="where an adapter-only run's tower is now, if it moved")
    parser.add_argument("--out", required=True, help="output folder")


def export(
    model_path: str, out: str, model_base: str | None = None, vision_tower: str | None = None, check: bool = True
):
    """Writes the stock language model and tokenizer of `model_path` to `out`; returns the stock model.
    The model folder and `out` are checked before anything is loaded; a full disk or a refused write while
    saving is one SaveError line naming `out`, with the space needed and free."""
    tokenizer, model = load_for_export(model_path, out, model_base, vision_tower)
    stock = to_stock(model)
    if check:
        words = min(
            model.get_input_embeddings().num_embeddings, len(tokenizer), *placeholder_ids(model.config).values()
        )
        diff = check_same_logits(model, stock, words)
        logger.info("text-only logits of the export match the multimodal model's (max difference %.2g)", diff)
    with saving(out, "the exported model", needed=weight_bytes(stock)):
        os.makedirs(out, exist_ok=True)
        stock.save_pretrained(out)
        tokenizer.save_pretrained(out)
    logger.info(
        "wrote %s (%s, model_type %s) with its tokenizer to %s",
        type(stock).__name__,
        model.config.model_type,
        stock.config.model_type,
        out,
    )
    return stock


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m llava.eval.export_lm", description=__doc__.split("\n\n")[0])
    add_source_arguments(parser)
    parser.add_argument("--no-check", action="store_true", help="skip the logits comparison before saving")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    export(args.model_path, args.out, args.model_base, args.vision_tower, check=not args.no_check)
    return 0


# The command line: an expected failure ends in one line `error: WHAT (WHERE)` and a non-zero status (a
# traceback only for a bug, or with LLAVA_DEBUG=1); main itself raises, for callers in Python.
cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(cli())
