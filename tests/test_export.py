"""Export of the language model: stock transformers, in a process that never imports llava, loads the
exported folder of every family and gives the multimodal model's text-only logits."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from llava.eval import export_lm
from llava.model.builder import load_pretrained_model
from llava.testing import TINY_LANGUAGE_CONFIGS

from model_helpers import llava_checkpoint

FAMILIES = sorted(TINY_LANGUAGE_CONFIGS)
STOCK_CLASSES = {
    "llava_gpt2": ("GPT2LMHeadModel", "gpt2"),
    "llava_llama": ("LlamaForCausalLM", "llama"),
    "llava_mistral": ("MistralForCausalLM", "mistral"),
    "llava_mixtral": ("MixtralForCausalLM", "mixtral"),
    "llava_qwen": ("Qwen2ForCausalLM", "qwen2"),
    "llava_gemma": ("GemmaForCausalLM", "gemma"),
    "llava_mpt": ("MptForCausalLM", "mpt"),
}
TEXT = "si vede un cerchio rosso spostarsi verso destra"

# Runs in a fresh interpreter: plain transformers, as the BabyLM pipeline loads a checkpoint.
LOADER = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folders, text, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    results = {}
    for folder in folders:
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        ids = tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            results[folder] = {"class": type(model).__name__, "ids": ids, "logits": model(input_ids=ids).logits}
    assert not [m for m in sys.modules if m == "llava" or m.startswith("llava.")], "llava was imported"
    torch.save(results, out)
""")


@pytest.mark.slow
def test_stock_transformers_loads_the_export_with_the_same_logits(tmp_path, tokenizer_dir, tower_dir):
    exported = {}
    for family in FAMILIES:
        checkpoint = llava_checkpoint(family, tmp_path / family, tokenizer_dir, tower_dir)
        out = tmp_path / family / "export"
        assert export_lm.main(["--model-path", str(checkpoint), "--out", str(out)]) == 0
        exported[family] = (checkpoint, out)

    results_file = tmp_path / "stock_logits.pt"
    folders = [str(out) for _, out in exported.values()]
    result = subprocess.run(
        [sys.executable, "-c", LOADER, json.dumps(folders), TEXT, str(results_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stock = torch.load(results_file, weights_only=True)

    for family, (checkpoint, out) in exported.items():
        stock_class, stock_type = STOCK_CLASSES[family]
        config = json.loads((out / "config.json").read_text())
        assert config["model_type"] == stock_type and config["architectures"] == [stock_class], family
        assert not [k for k in config if k.startswith("mm_")], family
        assert not any(
            k.startswith(("vision", "mm_")) or ".vision_" in k or ".mm_" in k
            for k in _safetensors_keys(out / "model.safetensors")
        ), family

        got = stock[str(out)]
        assert got["class"] == stock_class
        tokenizer, model, _, _ = load_pretrained_model(str(checkpoint))
        ids = tokenizer(TEXT, return_tensors="pt").input_ids
        assert torch.equal(got["ids"], ids), family
        with torch.no_grad():
            expected = model(input_ids=ids).logits
        assert torch.allclose(got["logits"], expected, atol=1e-5, rtol=0), (
            family,
            (got["logits"] - expected).abs().max(),
        )


def _safetensors_keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return list(f.keys())


def test_export_refuses_a_model_that_does_not_match(tmp_path, tokenizer_dir, tower_dir):
    checkpoint = llava_checkpoint("llava_gpt2", tmp_path, tokenizer_dir, tower_dir)
    _, model, _, _ = load_pretrained_model(str(checkpoint))
    stock = export_lm.to_stock(model)
    with torch.no_grad():
        stock.transformer.h[0].mlp.c_fc.weight.add_(torch.randn_like(stock.transformer.h[0].mlp.c_fc.weight))
    with pytest.raises(RuntimeError, match="logits differ"):
        export_lm.check_same_logits(model, stock, 64)
