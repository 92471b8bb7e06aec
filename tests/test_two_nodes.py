"""Two nodes for real: `sbatch --nodes=2 train_italian_video.sh` on a two-node SLURM cluster made on this
machine, each node a slurmd in its own network namespace with its own address (tests/slurm_cluster.py,
tests/node_namespaces.py). srun starts one torchrun per node, the two meet in a c10d rendezvous at the first
node's address, and DeepSpeed ZeRO-2 trains over gloo between the namespaces. Its per-step losses equal
those of a one-node job of two processes with the same global batch, on the same cluster.

The namespaces share the host's name, which resolves to 127.0.0.1 on both "nodes": whatever finds a node by
its host name instead of its SLURM NodeAddr fails here, as it does on clusters whose /etc/hosts maps the
host name to a loopback address. gloo, which picks its interface by resolving the host name, is told the
interface instead (GLOO_SOCKET_IFNAME=eth0, the name of each node's end of its link), through sbatch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import node_namespaces
from slurm_cluster import SlurmCluster
from test_launch_script import SCRIPT, TINY_FLAGS, clean_env, job_env, run_script
from train_helpers import flag_tokens, make_assets, path_flags


def submit(
    cluster: SlurmCluster, env: dict, arguments: list[str], log_dir: Path, nodes: int, timeout: float = 400
) -> tuple[int, str]:
    """`sbatch --wait --nodes=N train_italian_video.sh ARGUMENTS`, one task per node, the #SBATCH GPU
    request overridden to none; returns (returncode, job log)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "sbatch",
        "--wait",
        "--parsable",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        "--gpus-per-node=0",
        f"--cpus-per-task={min(os.cpu_count() or 1, 2)}",
        "--time=00:15:00",
        f"--output={log_dir}/%x_%j.out",
        str(SCRIPT),
        *arguments,
    ]
    try:
        result = cluster.run(args, timeout=timeout, check=False, env=job_env(cluster, env))
    except subprocess.TimeoutExpired:
        logs = "\n".join(p.read_text(errors="replace")[-4000:] for p in log_dir.glob("*.out"))
        pytest.fail(f"sbatch --nodes={nodes} did not finish within {timeout} s\n{logs}\n{cluster.daemon_log_tails()}")
    logs = list(log_dir.glob("*.out"))
    job_log = logs[0].read_text(errors="replace") if logs else f"(no job log)\n{result.stdout}{result.stderr}"
    if result.returncode != 0:
        print(job_log[-6000:], cluster.daemon_log_tails(), sep="\n")
    return result.returncode, job_log


def step_losses(output_dir: Path) -> dict[int, float]:
    """Per-step losses as the trainer recorded them (full precision, unlike its log lines)."""
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def test_each_node_starts_torchrun_with_its_own_node_address(tmp_path):
    """The command lines alone, where no cluster can be made: in a (pretend) two-node allocation whose host
    names SLURM reaches at other addresses, the rendezvous is at the first node's NodeAddr, and the srun'd
    command gives each node's torchrun that node's NodeAddr as --local_addr and is_host on the first only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1 $2" = "show hostnames" ]; then printf "gpu-a01\\ngpu-a02\\n"; fi\n'
        'if [ "$1 $2 $3" = "show node -o" ]; then for i in 1 2; do\n'
        '  echo "NodeName=gpu-a0$i Arch=x86_64 CoresPerSocket=2 CPUAlloc=0 NodeAddr=10.1.0.1$i"'
        '" NodeHostName=gpu-a0$i Version=22.05.8"\n'
        "done; fi\n"
    )
    # srun: runs the command after its own options once per node, as slurmd would (SLURMD_NODENAME set)
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        'while [ "$1" != bash ]; do shift; done\n'
        'for node in gpu-a01 gpu-a02; do SLURMD_NODENAME=$node "$@" || exit; done\n'
    )
    recorder = (
        bin_dir / "fake-python"
    )  # records its environment and arguments (the recipe's output folder: asked of python)
    recorder.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1 $2" = "-m llava.train.recipe" ]; then exec "{sys.executable}" "$@"; fi\n'
        'printf "%s\\n" "PET_LOCAL_ADDR=$PET_LOCAL_ADDR" "PET_RDZV_CONF=$PET_RDZV_CONF" "$@"'
        ' > "$RECORD_DIR/$SLURMD_NODENAME.txt"\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    lm, videos = tmp_path / "lm", tmp_path / "videos"
    lm.mkdir()
    videos.mkdir()
    (lm / "config.json").write_text("{}")
    (tmp_path / "train.json").write_text("[]")
    env = clean_env(
        PYTHON=recorder,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        RECORD_DIR=tmp_path,
        SLURM_JOB_ID="4242",
        SLURM_NNODES="2",
        SLURM_JOB_NODELIST="gpu-a[01-02]",
        SLURM_CPUS_PER_TASK="2",
        SLURM_SUBMIT_DIR=str(SCRIPT.parent),
    )
    paths = {"model_name_or_path": lm, "vision_tower": lm, "video_folder": videos, "data_path": tmp_path / "train.json"}
    result = run_script(env, *flag_tokens(paths, output_dir=tmp_path / "out"), timeout=30)
    assert result.returncode == 0, result.stderr
    assert re.search(r"RENDEZVOUS\s+10\.1\.0\.11:24242\n", result.stdout), result.stdout
    for node, addr, is_host in (("gpu-a01", "10.1.0.11", "true"), ("gpu-a02", "10.1.0.12", "false")):
        argv = (tmp_path / f"{node}.txt").read_text().splitlines()
        assert argv[:2] == [f"PET_LOCAL_ADDR={addr}", f"PET_RDZV_CONF=is_host={is_host}"], argv
        assert argv[2:16] == [
            "-m",
            "llava.train.launch",
            "--nnodes",
            "2",
            "--nproc_per_node",
            "1",
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            "10.1.0.11:24242",
            "--rdzv_id",
            "4242",
            "-m",
            "llava.train.train",
        ], argv
        assert f"node {node}: torchrun --local_addr {addr}, rendezvous store here: {is_host}" in result.stderr


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.slurm
def test_two_node_job_trains_like_one_node_with_the_same_global_batch(tmp_path):
    assets = make_assets(tmp_path / "assets", num_train=8, num_val=2)
    flags = {**TINY_FLAGS, **path_flags(assets), "deepspeed": "scripts/zero2.json"}
    variables = {
        # the same threads per process in both runs: a different count may sum in another order
        "OMP_NUM_THREADS": 1,
        # gloo finds its address by resolving the host name, which is the host's loopback on every node here
        "GLOO_SOCKET_IFNAME": "eth0",
    }
    cluster = SlurmCluster(nodes=2)
    try:
        cluster.start()  # a skip (namespaces refused) or, in CI, a failure (SLURM missing): tests/tiers.py
        one_node = tmp_path / "one-node"
        one_env, one_args = clean_env(**variables, NPROC=2), flag_tokens(flags, output_dir=one_node)
        rc, one_log = submit(cluster, one_env, one_args, tmp_path / "logs1", nodes=1)
        assert rc == 0, one_log[-6000:]
        two_nodes = tmp_path / "two-nodes"
        two_env, two_args = clean_env(**variables, NPROC=1), flag_tokens(flags, output_dir=two_nodes)
        rc, two_log = submit(cluster, two_env, two_args, tmp_path / "logs2", nodes=2)
        assert rc == 0, two_log[-6000:]
    finally:
        cluster.stop()
    assert not cluster.leftover_pids(), "processes of the test cluster outlived it"
    assert not cluster.network.leftovers(), "the node namespaces or the bridge outlived the cluster"

    first, second = cluster.network.node_addrs
    # one torchrun on each node, each with its own address; the first node serves the rendezvous store
    assert re.search(r"NODES\s+2\n", two_log), two_log[:3000]
    assert "batch 2 per device x 1 accumulation x 2 processes = 4 samples per optimizer step" in two_log, two_log[
        -6000:
    ]
    assert re.search(rf"RENDEZVOUS\s+{re.escape(first)}:\d+", two_log), two_log[:3000]
    assert f"node n1: torchrun --local_addr {first}, rendezvous store here: true" in two_log, two_log[:3000]
    assert f"node n2: torchrun --local_addr {second}, rendezvous store here: false" in two_log, two_log[:3000]
    assert "batch 2 per device x 1 accumulation x 2 processes = 4 samples per optimizer step" in one_log

    checkpoint = two_nodes / "checkpoint-4"
    assert list(checkpoint.glob("global_step*")), "no DeepSpeed engine state in the two-node checkpoint"
    one, two = step_losses(one_node), step_losses(two_nodes)
    assert sorted(two) == sorted(one) == [1, 2, 3, 4], (one, two)
    assert [two[s] for s in sorted(two)] == pytest.approx([one[s] for s in sorted(one)], rel=1e-5, abs=1e-6)


def test_node_network_that_fails_half_way_leaves_nothing_behind():
    """The second namespace's name is taken, so `up()` fails after making the bridge and the first node:
    it says which command failed, and removes all it made."""
    node_namespaces.require()
    network = node_namespaces.NodeNetwork(2)
    subprocess.run(["ip", "netns", "add", network.namespaces[1]], check=True, capture_output=True)
    try:
        with pytest.raises(node_namespaces.NetworkError, match=f"ip netns add {network.namespaces[1]}"):
            network.up()
        assert network.leftovers() == []
    finally:
        network.down()
    assert network.leftovers() == []
