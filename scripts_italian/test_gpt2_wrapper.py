#!/usr/bin/env python
"""Checks the GPT-2 wrapper in seconds on a CPU: imports, config, classes, attribute access, Auto
registration, and one real video-conditioned forward and generate through tiny random models.

Prints a PASS/FAIL line per check and a summary; exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def imports():
    from llava.model import LlavaGPT2Config, LlavaGPT2ForCausalLM, LlavaGPT2Model  # noqa: F401


@check
def config():
    from transformers import GPT2Config

    from llava.model import LlavaGPT2Config

    cfg = LlavaGPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=30000, n_positions=1024)
    assert isinstance(cfg, GPT2Config) and cfg.model_type == "llava_gpt2"
    assert (cfg.hidden_size, cfg.max_position_embeddings) == (768, 1024)
    assert cfg.do_sample is False and cfg.max_new_tokens > 0 and cfg.temperature is not None


@check
def model_classes():
    from transformers import GPT2LMHeadModel, GPT2Model

    from llava.model import LlavaGPT2ForCausalLM, LlavaGPT2Model
    from llava.modeling.llava_arch import LlavaMetaForCausalLM, LlavaMetaModel

    assert issubclass(LlavaGPT2Model, LlavaMetaModel) and issubclass(LlavaGPT2Model, GPT2Model)
    assert issubclass(LlavaGPT2ForCausalLM, GPT2LMHeadModel) and issubclass(LlavaGPT2ForCausalLM, LlavaMetaForCausalLM)


@check
def attribute_access():
    model = _tiny_model()
    inner = model.get_model()
    assert inner is model.transformer
    assert inner.model is inner
    assert inner.embed_tokens is inner.wte is model.get_input_embeddings()
    assert model.lm_head.weight is inner.wte.weight


@check
def auto_registration():
    from transformers import AutoConfig, AutoModelForCausalLM

    from llava.model import AVAILABLE_MODELS, LlavaGPT2Config, LlavaGPT2ForCausalLM

    assert AVAILABLE_MODELS["llava_gpt2"] == "LlavaGPT2ForCausalLM, LlavaGPT2Config"
    assert type(AutoConfig.for_model("llava_gpt2")) is LlavaGPT2Config
    assert type(AutoModelForCausalLM.from_config(_tiny_model().config)) is LlavaGPT2ForCausalLM


@check
def video_forward():
    import torch

    model = _tiny_model()
    ids = _video_prompt()
    out = model(input_ids=ids, labels=ids.clamp(min=0), images=[_clip()])
    assert out.logits.shape == (1, ids.shape[1] - 1 + 96, model.config.vocab_size), out.logits.shape
    assert torch.isfinite(out.loss)


@check
def video_generate():
    model = _tiny_model()
    tokens = model.generate(_video_prompt(), images=[_clip()], max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert tokens.shape == (1, 5)


@check
def save_and_reload():
    import torch
    from transformers import AutoModelForCausalLM

    model = _tiny_model()
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = AutoModelForCausalLM.from_pretrained(folder)
    ids, clip = _video_prompt(), _clip()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, images=[clip]).logits, loaded(input_ids=ids, images=[clip]).logits)


# --------------------------------------------------------------------------------- tiny models
_CACHE = {}


def _tiny_model():
    """A tiny GPT-2 with a tiny DINOv2 and the seed's packer grids (64 + 32 tokens per clip)."""
    if "model" not in _CACHE:
        import torch

        from llava.model import LlavaGPT2Config, LlavaGPT2ForCausalLM
        from llava.testing import save_tiny_vision_tower, tiny_vision_args

        torch.manual_seed(0)
        model = LlavaGPT2ForCausalLM(
            LlavaGPT2Config(
                n_layer=2, n_embd=32, n_head=4, vocab_size=128, n_positions=256, bos_token_id=1, eos_token_id=2
            )
        )
        with tempfile.TemporaryDirectory() as tower:
            model.get_model().initialize_vision_modules(tiny_vision_args(save_tiny_vision_tower(tower)))
        _CACHE["model"] = model.eval()
    return _CACHE["model"]


def _video_prompt():
    import torch

    from llava.constants import IMAGE_TOKEN_INDEX

    return torch.tensor([[5, IMAGE_TOKEN_INDEX, 7, 8]])


def _clip():
    import torch

    from llava.testing import IMAGE_SIZE

    return torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE)


def main(argv=None) -> int:
    from llava.errors import ArgumentParser

    parser = ArgumentParser(
        prog="python scripts_italian/test_gpt2_wrapper.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="checks: " + ", ".join(fn.__name__ for fn in CHECKS),
    )
    parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    failed = 0
    for fn in CHECKS:
        try:
            fn()
            print(f"PASS  {fn.__name__}")
        except Exception:  # every failure is reported, then counted
            failed += 1
            print(f"FAIL  {fn.__name__}\n{traceback.format_exc()}")
    print(f"{len(CHECKS) - failed}/{len(CHECKS)} checks passed in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    # A failing check prints its traceback on purpose (that is this script's report); entry_point covers
    # the rest: the one line for an interrupted run (Ctrl-C), or an OSError outside the checks.
    from llava import errors

    sys.exit(errors.entry_point(main)())
