"""The tiny run under DeepSpeed with two processes on the CPU (DeepSpeed picks its CPU accelerator and
gloo here): ZeRO-2, and ZeRO-3 with the frozen tower saved whole, not as empty partitions."""

import sys
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, Dinov2Model

from train_helpers import ROOT, logged_losses, run_training, train_args

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


# ZeRO-3 runs in bf16, as on GPUs: the visual modules built after from_pretrained must join the
# partitioned bf16 model (a mix of dtypes fails DeepSpeed's partitioning).
# zero3_offload: LLaVA's scripts name it (parameters and optimizer states offloaded to the CPU).
@pytest.mark.parametrize(
    "stage, precision", [("zero2", []), ("zero3", ["--bf16", "True"]), ("zero3_offload", ["--bf16", "True"])]
)
def test_two_process_deepspeed_run_learns_and_saves_a_whole_model(stage, precision, train_assets, tmp_path):
    out = tmp_path / stage
    args = train_args(
        train_assets,
        out,
        "--deepspeed",
        str(ROOT / "scripts" / f"{stage}.json"),
        *precision,
        "--per_device_train_batch_size",
        "2",
        "--learning_rate",
        "3e-3",
        steps=30,
    )
    start = time.perf_counter()
    result = run_training(args, launcher=TORCHRUN, env={"OMP_NUM_THREADS": "1"})
    print(f"{stage} two-process run wall time {time.perf_counter() - start:.1f} s")
    assert result.returncode == 0, result.stderr[-4000:]
    losses = logged_losses(out)
    assert sum(losses[s] for s in (28, 29, 30)) / 3 < 0.6 * losses[1], losses

    model = AutoModelForCausalLM.from_pretrained(out)
    tower = Dinov2Model.from_pretrained(train_assets["tower"]).state_dict()
    saved = model.get_vision_tower().vision_tower.state_dict()
    assert saved.keys() == tower.keys()
    # frozen and whole (bf16 training keeps the tower's values to bf16 precision)
    assert all(torch.allclose(saved[k].float(), v, rtol=1e-2, atol=1e-2) for k, v in tower.items())
    for name, param in model.named_parameters():
        assert param.numel() > 0 and torch.isfinite(param).all(), name
