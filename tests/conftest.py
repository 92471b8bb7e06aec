import os
import sys

import pytest
import torch

import llava.model  # noqa: F401  (registers the families)
from llava.demo.synthetic import caption_corpus, train_tokenizer
from llava.testing import save_tiny_vision_tower

import tiers
from disk_helpers import SmallDisks
from slurm_cluster import SlurmCluster
from train_helpers import make_assets, make_script_assets, train_tiny_checkpoint, write_dummy_paths

# DeepSpeed compiles a small op on its first start, into torch's extension folder, by default one per
# user; checkouts with other include paths rebuild it in turn and wait on each other's build lock. One
# folder per virtual environment (inherited by every process a test starts) builds it once.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))

# Fixtures a test may use only with these marks (pyproject.toml's tiers), so that `make test-fast`
# ("not slow and not distributed and not slurm") never builds them; checked at collection, where a test
# without them is a collection error naming the test and the fixture. A fixture built on one of these
# (test_llava_api's `loaded` on `checkpoint`) counts: a test's fixturenames hold what its fixtures use, and
# a module's fixture of the same name (test_eval_captions' `checkpoint`) does the same work. Measured on 2
# CPU cores: `checkpoint` trains for 1.6-1.8 s; `train_assets` (0.3-0.45 s) and `script_assets` are the
# training tests' data, which a fast run would build for one test alone. `assets` (0.2-0.45 s) is not
# here: it is the fast tier's own shared set, built once for some forty fast tests.
FIXTURE_MARKS = {
    "checkpoint": (("slow",), "trains the tiny captioner"),
    "train_assets": (("slow",), "builds the training tests' 24-clip set"),
    "script_assets": (("slow",), "builds train_italian_video.sh's assets for real runs"),
    "slurm_cluster": (("slow", "slurm"), "starts a SLURM cluster"),
}


def pytest_configure(config):
    """FIXTURE_MARKS checked at collection, and one line at the end of the run listing the privileged tiers
    (tiers.PRIVILEGED_TIERS) that were skipped, with their reasons: CI lets them skip, and that line is
    where a reader sees what did not run."""
    config.pluginmanager.register(tiers.Checks(FIXTURE_MARKS), "llava-tiers")


def pytest_collection_modifyitems(config, items):
    """Modules with multi-process tests (two ranks, a SLURM cluster) run first, in their order: they are the
    longest, and `make test` spreads modules over its workers as they free up, so a long module started
    last would run alone at the end while the other worker idles."""
    multi_process = {
        item.module.__name__
        for item in items
        if item.get_closest_marker("distributed") or item.get_closest_marker("slurm")
    }
    items.sort(key=lambda item: item.module.__name__ not in multi_process)


@pytest.fixture(scope="session")
def tower_dir(tmp_path_factory):
    """A tiny random DINOv2 with its image processor, saved like facebook/dinov2-large."""
    return save_tiny_vision_tower(tmp_path_factory.mktemp("dinov2"), "dinov2")


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """Clips (8 for training, 4 for validation), tokenizer, GPT-2 and tower of a tiny captioner, shared by
    the inference tests; a module that needs other data defines its own `assets`."""
    return make_assets(tmp_path_factory.mktemp("assets"), num_train=8, num_val=4)


@pytest.fixture(scope="session")
def checkpoint(assets, tmp_path_factory):
    """A full checkpoint of the tiny captioner, trained a few steps (read-only for the tests)."""
    return train_tiny_checkpoint(assets, tmp_path_factory.mktemp("run") / "llava-tiny")


@pytest.fixture(scope="session")
def train_assets(tmp_path_factory):
    """make_assets' default set (24 clips for training, 4 for validation) of the training tests; read-only
    (a test that needs more files writes them in its own tmp_path)."""
    return make_assets(tmp_path_factory.mktemp("train_assets"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A byte-level BPE tokenizer trained on the synthetic captions (as make_assets trains it), saved."""
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"), caption_corpus())


@pytest.fixture(scope="session")
def script_assets(tmp_path_factory):
    """train_italian_video.sh's path flags for tiny real runs (clips, caption-only text, tokenizer, GPT-2,
    tower), a video run's and a text run's (train_helpers.ScriptPaths); read-only."""
    return make_script_assets(tmp_path_factory.mktemp("script_assets"))


@pytest.fixture(scope="session")
def dummy_paths(tmp_path_factory):
    """train_italian_video.sh's path flags for runs that never train, a video run's and a text run's
    (train_helpers.ScriptPaths): they pass the preflight's checks without being real models or clips;
    read-only."""
    return write_dummy_paths(tmp_path_factory.mktemp("dummy"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _normal_scheduling():
    """A test leaves its worker under the normal scheduling policy: a real-time one (SVT-AV1, PyAV's AV1
    encoder, sets SCHED_FIFO on the process that encodes, as root) would pass to every process the worker
    starts later and starve them, far from the test that caused it."""
    yield
    policy = os.sched_getscheduler(0)
    assert policy == os.SCHED_OTHER, f"the test left this process under scheduling policy {policy}, not SCHED_OTHER"


@pytest.fixture
def slurm_cluster():
    """A private one-node SLURM cluster for one test (where SLURM is missing or cannot start: a skip saying
    why, a failure in CI; tiers.require_installed)."""
    cluster = SlurmCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    assert not cluster.leftover_pids(), "processes of the test cluster outlived it"


@pytest.fixture
def disks(tmp_path):
    """Small real disks (tmpfs): `disks.mount(name, size, read_only=False)`, `disks.remount(folder, options)`."""
    disks = SmallDisks(tmp_path)
    try:
        yield disks
    finally:
        disks.unmount_all()
