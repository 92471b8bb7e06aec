"""Tiny end-to-end runs of train.py on clips written by the tests (CPU, one process)."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from llava.model import LlavaGPT2ForCausalLM
from llava.modeling.adapter_weights import adapter_state_dict
from llava.train import train
from llava.train.checkpoints import COMPLETE_MARKER

from media_helpers import write_broken_inputs
from train_helpers import ROOT, logged_losses, run_training, train_args


def first_batch(trainer):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    batch.pop("skipped")
    return batch


@pytest.mark.slow
def test_tiny_run_learns_and_the_final_model_reloads(train_assets, tmp_path):
    out = tmp_path / "out"
    start = time.perf_counter()
    trainer = train.main(train_args(train_assets, out, steps=40))
    print(f"tiny run wall time {time.perf_counter() - start:.1f} s")
    losses = logged_losses(out)
    final = sum(losses[s] for s in (38, 39, 40)) / 3
    # From about 6.0 (a model that learns nothing stays near ln 512 = 6.2) to about 3.2 in 40 steps on the
    # demo's captions since they inflect for gender and number (it reached half before, on captions of
    # one form each: masculine singular only).
    assert final < 0.6 * losses[1], losses

    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(reloaded) is LlavaGPT2ForCausalLM
    model = trainer.model.eval()
    batch = first_batch(trainer)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded(**batch).logits)
    assert (out / "preprocessor_config.json").exists() and (out / "tokenizer.json").exists()


def test_model_max_length_beyond_positions_is_bounded_by_them(assets, tmp_path, capsys):
    # LLaVA's scripts pass 2048-32768 whatever the model: a warning, and the model's positions. `assets`,
    # not `train_assets`: the same 256-position GPT-2, from the set the fast tier builds anyway.
    built = train.build_model(train.parse_args(train_args(assets, tmp_path / "out", "--model_max_length", "512")))
    assert built.max_length == 256
    assert "--model_max_length 512 is more than the language model's 256 positions" in capsys.readouterr().err


@pytest.mark.slow
def test_broken_clips_are_skipped_counted_listed_and_the_run_finishes(train_assets, tmp_path):
    # (written beside the test, not into the shared clip folder: an absolute path overrides --video_folder)
    broken = write_broken_inputs(tmp_path / "broken", Path(train_assets["video_folder"]) / "train_00000.mp4")
    samples = json.loads(Path(train_assets["train"]).read_text())
    for name in broken:
        samples.append(
            {
                "id": f"broken-{name}",
                "video": str(broken[name]),
                "conversations": [
                    {"from": "human", "value": "<video>\n"},
                    {"from": "gpt", "value": "un cerchio rosso"},
                ],
            }
        )
    data = tmp_path / "with_broken.json"
    data.write_text(json.dumps(samples))
    out = tmp_path / "out"
    # 29 samples, batches of 4: 8 steps see every sample once
    trainer = train.main(train_args(train_assets, out, "--max_skip_fraction", "0.25", steps=8, data=str(data)))
    listed = [json.loads(line) for line in (out / "skipped_samples.jsonl").read_text().splitlines()]
    assert sorted(entry["id"] for entry in listed) == sorted(f"broken-{n}" for n in broken)
    assert all(entry["reason"] for entry in listed)
    assert trainer.skip_tracker.count == len(broken)
    assert (out / "model.safetensors").exists()

    with pytest.raises(RuntimeError, match="skipped_samples.jsonl"):
        train.main(train_args(train_assets, tmp_path / "strict", steps=8, data=str(data)))  # default limit: 5%


@pytest.mark.slow
def test_adapter_only_run_with_gradient_checkpointing_saves_a_loadable_adapter(train_assets, tmp_path):
    out = tmp_path / "out"
    trainer = train.main(
        train_args(
            train_assets,
            out,
            "--mm_tunable_parts",
            "mm_vision_resampler,mm_mlp_adapter",
            "--gradient_checkpointing",
            "True",
            "--mm_projector_lr",
            "5e-3",
            steps=4,
        )
    )
    adapter = torch.load(out / "mm_projector.bin", weights_only=True)
    trained = adapter_state_dict(trainer.model.get_model())
    assert set(adapter) == set(trained)
    start = LlavaGPT2ForCausalLM.from_pretrained(train_assets["gpt2"])
    assert torch.equal(trainer.model.transformer.h[0].attn.c_attn.weight, start.transformer.h[0].attn.c_attn.weight)
    assert any(not torch.equal(adapter[k], torch.zeros_like(adapter[k])) for k in adapter if "mm_pos_embed" in k)
    assert {g["initial_lr"] for g in trainer.optimizer.param_groups} == {5e-3}  # only the adapter trains

    args = train.parse_args(
        train_args(train_assets, tmp_path / "next", "--pretrain_mm_mlp_adapter", str(out / "mm_projector.bin"))
    )
    model = train.build_model(args).model
    for key, value in adapter_state_dict(model.get_model()).items():
        assert torch.equal(value, adapter[key]), key


@pytest.mark.slow
def test_bf16_on_the_cpu_and_continuing_from_a_llava_checkpoint(train_assets, tmp_path):
    first = tmp_path / "first"
    train.main(train_args(train_assets, first, "--bf16", "True", steps=2))
    assert all(torch.isfinite(torch.tensor(v)) for v in logged_losses(first).values())
    # start again from the saved llava checkpoint: no --vision_tower, its config describes the tower
    args = train_args(train_assets, tmp_path / "second", steps=2)
    args[args.index("--vision_tower") : args.index("--vision_tower") + 2] = []
    args[args.index("--model_name_or_path") + 1] = str(first)
    trainer = train.main(args)
    assert trainer.model.config.mm_vision_tower == train_assets["tower"]
    assert (tmp_path / "second" / "preprocessor_config.json").exists()


@pytest.mark.slow
def test_text_only_training_on_captions(train_assets, tmp_path):
    samples = json.loads(Path(train_assets["train"]).read_text())
    captions = [{"id": s["id"], "conversations": s["conversations"][1:]} for s in samples]
    data = tmp_path / "captions.json"
    data.write_text(json.dumps(captions))
    args = train_args(train_assets, tmp_path / "out", "--gradient_checkpointing", "True", steps=4, data=str(data))
    args[args.index("--vision_tower") : args.index("--vision_tower") + 2] = []
    trainer = train.main(args)
    assert trainer.model.get_vision_tower() is None
    assert not hasattr(AutoModelForCausalLM.from_pretrained(tmp_path / "out").config, "mm_vision_tower")


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_losses(train_assets, tmp_path):
    steps = 12
    straight = tmp_path / "straight"
    result = run_training(train_args(train_assets, straight, steps=steps))
    assert result.returncode == 0, result.stderr[-3000:]
    expected = logged_losses(straight)

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "llava.train.train", *train_args(train_assets, killed, steps=steps)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(killed.glob(f"checkpoint-*/{COMPLETE_MARKER}")):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"
    # a save that was cut short: a newer checkpoint folder without the completion marker
    partial = killed / "checkpoint-10000"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 100)

    resumed = run_training(train_args(train_assets, killed, steps=steps))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removing incomplete checkpoint" in resumed.stderr and not partial.exists()
    resumed_from = int(resumed.stderr.split("resuming from ")[1].split("checkpoint-")[1].split()[0])
    assert 2 <= resumed_from < steps
    got = logged_losses(killed)
    after = [s for s in expected if s > resumed_from]
    assert after and all(abs(got[s] - expected[s]) <= 1e-4 for s in after), {s: (got[s], expected[s]) for s in after}
