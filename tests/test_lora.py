"""LoRA through peft, as LLaVA trains and loads it and LLaVA-ST stacks it (llava/model/lora.py,
llava/train/lora.py): tiny GPT-2 and Llama runs with --lora_enable through the training's own pieces
(build_trainer, then train_and_save: what train.main runs), their folders, loading them onto the base with
load_pretrained_model, the merged export, resuming, --load_lora_path; and a LoRA model of every family."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from llava.errors import InputError, UsageError
from llava.model.builder import causal_lm_class, load_pretrained_model
from llava.model.lora import NON_LORA_FILE, STACK_KEY, add_lora, is_visual, plain_name
from llava.model.merge_lora import main as merge_main
from llava.testing import TINY_LANGUAGE_CONFIGS
from llava.train import preflight, train
from llava.train.arguments import parse_args
from llava.train.tunable_parts import DEFAULT_PARTS, apply_tunable_parts

from model_helpers import FAMILIES, clip, llava_model, prompt
from train_helpers import ROOT, run_training, train_args

LORA = ["--lora_enable", "True", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"]
LORA_FILES = ("adapter_config.json", "adapter_model.safetensors", NON_LORA_FILE, "config.json")
VISUAL_ADAPTER = ("vision_resampler", "mm_projector", "mm_pos_embed")  # what DEFAULT_PARTS trains whole


@dataclass
class Run:
    out: Path
    base: str  # the --model_name_or_path: the base the folder loads onto
    trainer: object
    before: dict  # every parameter before training
    resumed_from: str | None


def lora_run(assets, out, *extra, base=None, steps=2) -> Run:
    argv = train_args(assets, out, *LORA, *extra, steps=steps)
    base = base or assets["gpt2"]
    argv[argv.index("--model_name_or_path") + 1] = base
    trainer, resume = train.build_trainer(argv)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    train.train_and_save(trainer, resume)
    trainer.model.eval()
    return Run(Path(out), base, trainer, before, resume)


def llama_lm(assets, folder) -> str:
    """A tiny random Llama with the assets' tokenizer beside it (vocabulary and special ids of it)."""
    tokenizer = AutoTokenizer.from_pretrained(assets["gpt2"])
    config = TINY_LANGUAGE_CONFIGS["llava_llama"]()
    config.vocab_size, config.max_position_embeddings = len(tokenizer), 256
    config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = None
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def run(request, assets, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"lora_{request.param}")
    base = assets["gpt2"] if request.param == "gpt2" else llama_lm(assets, root / "llama")
    return lora_run(assets, root / "out", base=base)


@pytest.fixture(scope="module")
def gpt2_run(assets, tmp_path_factory):
    return lora_run(assets, tmp_path_factory.mktemp("lora_gpt2_stack_base") / "out")


def batch_of(trainer, count=3):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(count)])
    batch.pop("skipped")
    return batch


@torch.no_grad()
def logits(model, batch):
    return model.eval()(**batch).logits


# ------------------------------------------------------------------------------------- training
@pytest.mark.slow
def test_only_the_adapters_and_the_tunable_parts_train(run):
    changed = {n for n, p in run.trainer.model.named_parameters() if not torch.equal(run.before[n], p.detach())}
    trainable = {n for n, p in run.trainer.model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    assert lora and trainable - lora == {n for n in trainable if any(f".{m}." in n for m in VISUAL_ADAPTER)}
    # lora_B starts at zero: every adapter moved off it; the language model's own weights and the tower did not
    assert {n for n in lora if "lora_B" in n} <= changed
    assert changed <= trainable
    assert any(".mm_projector." in n for n in changed)
    assert not any(".vision_tower." in n or (not is_visual(n) and "lora_" not in n) for n in changed)


@pytest.mark.slow
def test_the_folder_and_its_checkpoints_hold_the_adapter_and_the_other_trained_weights(run):
    trained = {plain_name(n) for n, p in run.trainer.model.named_parameters() if p.requires_grad and "lora_" not in n}
    for folder in (run.out, run.out / "checkpoint-2"):
        assert all((folder / name).is_file() for name in LORA_FILES), sorted(p.name for p in folder.iterdir())
        assert not (folder / "model.safetensors").exists()
        adapter = json.loads((folder / "adapter_config.json").read_text())
        assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and adapter["task_type"] == "CAUSAL_LM"
        targets = adapter["target_modules"]
        assert targets and not any(is_visual(t) or t.endswith("lm_head") for t in targets)
        weights = load_file(folder / "adapter_model.safetensors")
        assert weights and all("lora_" in k for k in weights)
        non_lora = torch.load(folder / NON_LORA_FILE, weights_only=True)
        assert set(non_lora) == trained
    if "gpt2" in str(run.base):  # GPT-2's Conv1D layers: weights stored transposed
        assert adapter["fan_in_fan_out"] and any(t.endswith("attn.c_attn") for t in targets)
        assert len(targets) == 4 * 2  # c_attn, c_proj, c_fc, mlp.c_proj in each of 2 blocks


@pytest.mark.slow
def test_load_pretrained_model_with_the_base_merges_the_adapter_and_generates(run):
    tokenizer, model, processor, _ = load_pretrained_model(str(run.out), run.base, "llava-tiny-lora", device="cpu")
    assert type(model) is causal_lm_class(model.config.model_type)
    assert not any("lora_" in k for k in model.state_dict()) and processor is not None
    batch = batch_of(run.trainer)
    assert torch.allclose(logits(model, batch), logits(run.trainer.model, batch), atol=1e-5)
    assert model.config.conv_template == run.trainer.model.config.conv_template
    ids = torch.tensor([prompt(tokenizer.eos_token_id, None)])
    out = model.generate(ids, images=[batch["images"][0]], modalities=["video"], max_new_tokens=3, do_sample=False)
    assert out.shape[-1] == 3


@pytest.mark.slow
def test_the_merged_export_loads_with_no_flags(run, tmp_path):
    export = tmp_path / "merged"
    merge_main(["--model-path", str(run.out), "--model-base", run.base, "--save-model-path", str(export)])
    assert (export / "model.safetensors").is_file() and (export / "preprocessor_config.json").is_file()
    assert STACK_KEY not in json.loads((export / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(export)
    batch = batch_of(run.trainer)
    assert torch.allclose(logits(model, batch), logits(run.trainer.model, batch), atol=1e-5)


@pytest.mark.slow
def test_tokens_a_lora_run_adds_train_and_load_with_it(assets, tmp_path):
    grown = lora_run(assets, tmp_path / "out", "--mm_use_im_start_end", "True")  # <im_start>, <im_end>
    rows = torch.load(grown.out / NON_LORA_FILE, weights_only=True)["transformer.wte.weight"].shape[0]
    assert rows == len(AutoTokenizer.from_pretrained(grown.out)) == len(AutoTokenizer.from_pretrained(grown.base)) + 2
    _, model, _, _ = load_pretrained_model(str(grown.out), grown.base, None, device="cpu")
    batch = batch_of(grown.trainer)
    assert torch.allclose(logits(model, batch), logits(grown.trainer.model, batch), atol=1e-5)


def test_a_lora_folder_without_its_base_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "llava-gpt2-lora"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llava_gpt2"}')
    (folder / "adapter_config.json").write_text("{}")
    with pytest.raises(InputError) as refused:
        load_pretrained_model(str(folder), None, "llava-gpt2-lora")
    assert "\n" not in str(refused.value) and "--model-base" in str(refused.value)


# ---------------------------------------------------------------------------------- resuming
@pytest.mark.slow
def test_a_resumed_lora_run_ends_where_the_uninterrupted_run_ends(assets, tmp_path):
    straight = lora_run(assets, tmp_path / "straight", steps=4)
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(straight.out / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed = lora_run(assets, resumed_dir, steps=4)
    assert resumed.resumed_from == str(resumed_dir / "checkpoint-2")
    # The adapter (restored by the Trainer) and the projector, packer and embeddings (non_lora_trainables.bin)
    for name, value in straight.trainer.model.state_dict().items():
        assert torch.allclose(value, resumed.trainer.model.state_dict()[name], atol=1e-6), name


# ---------------------------------------------------------------------------------- stacking
@pytest.mark.slow
def test_load_lora_path_trains_a_second_adapter_on_the_first_merged(assets, gpt2_run, tmp_path):
    second = lora_run(assets, tmp_path / "second", "--load_lora_path", str(gpt2_run.out))
    config = json.loads((second.out / "config.json").read_text())
    assert config[STACK_KEY] == [str(gpt2_run.out.resolve())]

    _, first, _, _ = load_pretrained_model(str(gpt2_run.out), gpt2_run.base, None, device="cpu")
    _, plain, _, _ = load_pretrained_model(gpt2_run.base, None, None, device="cpu")
    layer = "transformer.h.0.attn.c_attn.weight"
    trained_on = second.trainer.model.get_base_model().state_dict()[layer.replace(".weight", ".base_layer.weight")]
    assert torch.equal(trained_on, first.state_dict()[layer])  # the first adapter, merged, is its base
    assert not torch.allclose(trained_on, plain.state_dict()[layer])

    _, loaded, _, _ = load_pretrained_model(str(second.out), gpt2_run.base, None, device="cpu")
    batch = batch_of(second.trainer)
    assert torch.allclose(logits(loaded, batch), logits(second.trainer.model, batch), atol=1e-5)
    assert not torch.allclose(logits(loaded, batch), logits(first, batch), atol=1e-3)  # the second one too


def test_a_missing_load_lora_path_fails_the_preflight_in_one_line(assets, tmp_path):
    args = parse_args(train_args(assets, tmp_path / "out", *LORA, "--load_lora_path", str(tmp_path / "gone")))
    with pytest.raises(InputError, match=r"^--load_lora_path folder does not exist \(.*gone\)$"):
        preflight.check(args)


# ------------------------------------------------------------------------------------ settings
def test_the_lora_flags_are_settings_of_their_own(assets, tmp_path):
    args = parse_args(train_args(assets, tmp_path, *LORA, "--lora_bias", "lora_only"))
    assert (args.lora.lora_enable, args.lora.lora_r, args.lora.lora_alpha) == (True, 4, 8)
    assert args.lora.lora_bias == "lora_only" and args.lora.load_lora_path is None
    with pytest.raises(UsageError, match=r"^--lora_bias some: choose one of none, all, lora_only$"):
        parse_args(train_args(assets, tmp_path, *LORA, "--lora_bias", "some"))
    with pytest.raises(UsageError, match="--lora_dropout 1.5 must be"):
        parse_args(train_args(assets, tmp_path, *LORA, "--lora_dropout", "1.5"))


def test_milestone_evaluation_of_a_lora_run_is_refused_in_one_line(assets, tmp_path):
    argv = train_args(assets, tmp_path, *LORA, "--word_milestones", "100", "--eval_milestones", "--captions x.json")
    with pytest.raises(UsageError, match="merge_lora"):
        preflight.check(parse_args(argv))


# ------------------------------------------------------------------------------ every family
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gets_adapters_on_its_language_model_that_train_and_merge(family, tower_dir, tmp_path):
    _, model = llava_model(family, tmp_path / family, tower_dir)
    model = add_lora(model, r=4, alpha=8, dropout=0.0)
    apply_tunable_parts(model, DEFAULT_PARTS, lora_bias="none")
    targets = model.peft_config["default"].target_modules
    assert targets and not any(is_visual(t) for t in targets)
    ids = torch.tensor([prompt(5, None, 6, 7)])
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), images=[clip()], modalities=["video"])
    model.train()
    model(**inputs, labels=ids).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if "lora_B" in n)
    assert all(grads[n] is not None for n in grads if ".mm_projector." in n)
    assert all(grads[n] is None for n in grads if "lora_" not in n and not is_visual(n))  # frozen LM
    assert all(grads[n] is None for n in grads if ".vision_tower." in n)

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    adapted = logits(model, inputs)
    merged = model.merge_and_unload()
    assert type(merged) is causal_lm_class(family)
    assert torch.allclose(logits(merged, inputs), adapted, atol=1e-5)


# -------------------------------------------------------------------------------- DeepSpeed
@pytest.mark.slow
@pytest.mark.distributed
def test_a_two_rank_zero2_lora_run_saves_a_folder_that_loads(assets, tmp_path):
    import sys

    out = tmp_path / "zero2"
    args = train_args(assets, out, *LORA, "--deepspeed", str(ROOT / "scripts" / "zero2.json"), steps=2)
    args[args.index("--per_device_train_batch_size") + 1] = "2"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run_training(args, launcher=torchrun, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert all((out / name).is_file() for name in LORA_FILES)
    _, model, _, _ = load_pretrained_model(str(out), assets["gpt2"], None, device="cpu")
    adapter = load_file(out / "adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)  # it trained
    assert not any("lora_" in k for k in model.state_dict())
