"""Training with coordinate tokens through the real entry point: GPT-2 and Llama under DeepSpeed ZeRO-2
on two processes (GPT-2 under ZeRO-3 too), every other family two steps in this process, on grounding
samples (boxes and spans in questions and answers) mixed with captions and text; the checkpoint reloads
with no flags and writes coordinates back."""

import json
import math
import random
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.model.builder import load_pretrained_model
from llava.modeling.coordinates import BINS
from llava.testing import TINY_LANGUAGE_CONFIGS
from llava.train import train

from model_helpers import FAMILIES
from train_helpers import ROOT, logged_losses, run_training, train_args

pytestmark = [pytest.mark.slow]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def grounding_data(assets, path, seed=0):
    """The training clips' captions, and per clip a box question (REC), a span question (TVG) and a question
    about a box; with two text-only samples. Coordinates as numbers in the text (data.md's form b)."""
    rng = random.Random(seed)
    with open(assets["train"]) as f:
        samples = json.load(f)
    out = []
    for i, sample in enumerate(samples):
        x1, y1 = rng.uniform(0, 0.5), rng.uniform(0, 0.5)
        box = [round(v, 3) for v in (x1, y1, x1 + rng.uniform(0.1, 0.5), y1 + rng.uniform(0.1, 0.5))]
        start = round(rng.uniform(0, 0.5), 3)
        span = [start, round(start + rng.uniform(0.1, 0.5), 3)]
        caption = sample["conversations"][1]["value"]
        video = sample["video"]
        out += [
            sample,
            {"id": f"rec-{i}", "video": video, "conversations": [
                {"from": "human", "value": "<video>\ndov'è la forma?"},
                {"from": "gpt", "value": f"la forma è in [{box[0]},{box[1]},{box[2]},{box[3]}]."},
            ]},
            {"id": f"tvg-{i}", "video": video, "conversations": [
                {"from": "human", "value": f"<video>\nquando si vede: {caption}"},
                {"from": "gpt", "value": f"{{{span[0]},{span[1]}}}"},
            ]},
            {"id": f"reg-{i}", "video": video, "conversations": [
                {"from": "human", "value": f"<video>\ncosa c'è in [{box[0]},{box[1]},{box[2]},{box[3]}]?"},
                {"from": "gpt", "value": caption},
            ]},
        ]  # fmt: skip
    out += [
        {"id": f"text-{i}", "conversations": [{"from": "gpt", "value": s["conversations"][1]["value"]}]}
        for i, s in enumerate(samples[:2])
    ]
    path.write_text(json.dumps(out))
    return str(path)


def language_model(family, assets, folder):
    """A tiny stock checkpoint of `family` with the demo's tokenizer (GPT-2: the assets' own)."""
    if family == "llava_gpt2":
        return assets["gpt2"]
    tokenizer = AutoTokenizer.from_pretrained(assets["gpt2"])
    config = TINY_LANGUAGE_CONFIGS[family]()
    config.vocab_size = len(tokenizer)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def grounding_args(family, assets, tmp_path, *extra, steps=2):
    args = train_args(
        assets,
        tmp_path / "run",
        "--coordinate_tokens",
        "True",
        "--per_device_train_batch_size",
        "2",
        *extra,
        steps=steps,
        data=grounding_data(assets, tmp_path / "grounding.json"),
    )
    args[args.index("--model_name_or_path") + 1] = language_model(family, assets, tmp_path / "lm")
    return args


def check_checkpoint(folder):
    """The run's checkpoint: coordinate tables saved, reloaded with no flags, answering with bins."""
    tokenizer, model, processor, _ = load_pretrained_model(str(folder), device="cpu")
    assert model.config.mm_coordinate_bins == BINS
    assert tokenizer.convert_tokens_to_ids("<TEMP-000>") == model.config.vocab_size
    tables = model.get_model().mm_coordinates
    assert all(torch.isfinite(t.weight).all() for t in [*tables.inputs.values(), *tables.outputs.values()])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokenizer("la forma è in")["input_ids"]])).logits
    assert logits.shape[-1] == model.config.vocab_size + 3 * BINS and torch.isfinite(logits).all()


# ZeRO-3 (bf16, as on GPUs) partitions each table as soon as it is built: the tables must still start at the
# word embeddings' scale, so that a fresh model's first loss is about the log of its vocabulary.
@pytest.mark.distributed
@pytest.mark.parametrize(
    "family, stage, precision",
    [("llava_gpt2", "zero2", []), ("llava_llama", "zero2", []), ("llava_gpt2", "zero3", ["--bf16", "True"])],
)
def test_deepspeed_on_two_processes_trains_grounding_samples(family, stage, precision, train_assets, tmp_path):
    deepspeed = ["--deepspeed", str(ROOT / "scripts" / f"{stage}.json"), *precision]
    args = grounding_args(family, train_assets, tmp_path, *deepspeed)
    result = run_training(args, launcher=TORCHRUN, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert "added coordinate tokens: 100 bins per axis" in result.stderr
    losses = logged_losses(tmp_path / "run")
    vocabulary = len(AutoTokenizer.from_pretrained(tmp_path / "run"))  # words and bins
    assert len(losses) == 2 and abs(losses[1] - math.log(vocabulary)) < 1.0, (losses, vocabulary)
    check_checkpoint(tmp_path / "run")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("llava_gpt2", "llava_llama")])
def test_every_other_family_trains_two_steps_with_coordinate_tokens(family, train_assets, tmp_path):
    # In this process, as train.main runs a run (build_trainer, then train_and_save): the two-process runs
    # above already go through the launcher and a fresh interpreter.
    trainer, resume = train.build_trainer(grounding_args(family, train_assets, tmp_path))
    train.train_and_save(trainer, resume)
    losses = logged_losses(tmp_path / "run")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses.values())
    check_checkpoint(tmp_path / "run")


def test_llava_st_stages_two_and_three_stack_lora_adapters_on_coordinate_tokens(train_assets, tmp_path):
    """LLaVA-ST's stage 2 (LoRA, coordinate tokens added) and stage 3 (a new LoRA on stage 2's merged in,
    --load_lora_path), as its scripts run them: the stage-3 folder loads on the base with its coordinates."""
    (tmp_path / "2").mkdir()
    (tmp_path / "3").mkdir()
    lora = ["--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16", "--mm_tunable_parts", "mm_vision_resampler"]
    stage2 = grounding_args("llava_gpt2", train_assets, tmp_path / "2", "--stage", "2", *lora)
    at = stage2.index("--coordinate_tokens")
    del stage2[at : at + 2]  # --stage 2 sets it
    train.train_and_save(*train.build_trainer(stage2))
    stage3 = grounding_args("llava_gpt2", train_assets, tmp_path / "3", "--stage", "3", *lora)
    stage3 += ["--load_lora_path", str(tmp_path / "2" / "run")]
    train.train_and_save(*train.build_trainer(stage3))
    tokenizer, model, _, _ = load_pretrained_model(str(tmp_path / "3" / "run"), train_assets["gpt2"], "llava-lora")
    assert model.config.mm_coordinate_bins == BINS
    assert tokenizer.convert_tokens_to_ids("<TEMP-000>") == model.config.vocab_size
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokenizer("la forma è in")["input_ids"]])).logits
    assert logits.shape[-1] == model.config.vocab_size + 3 * BINS and torch.isfinite(logits).all()
