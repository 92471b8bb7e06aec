"""What the web page's tests need: tiny saved checkpoints, clips of their own, the server as a real
process (`python -m llava.serve.web`), and headless Chromium driven by selenium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from llava.demo.synthetic import save_gpt2, write_clip
from llava.model.builder import from_pretrained
from llava.testing import tiny_vision_args

from tiers import require_installed
from train_helpers import ROOT, free_port

SERVING = "serving on "  # the server's line on stderr once it listens


def save_tiny_checkpoint(folder: Path, tokenizer_dir: str, tower_dir: str, seed: int) -> str:
    """A llava GPT-2 checkpoint built from a small config (untrained: its captions are still captions),
    with the tiny tower and `seed`'s random weights, saved with its tokenizer."""
    stock = folder.parent / f"{folder.name}-stock"
    save_gpt2(stock, tokenizer_dir, n_layer=2, n_embd=64, n_head=4, n_positions=256, dropout=0.0, seed=seed)
    torch.manual_seed(seed)
    model = from_pretrained("llava_gpt2", str(stock))
    model.get_model().initialize_vision_modules(tiny_vision_args(tower_dir))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    shutil.rmtree(stock)
    return str(folder)


def write_flat_clip(path: Path, level: int, frames: int = 12, size: int = 64) -> str:
    """A clip of a square moving over a flat background of grey `level` (0 dark ... 255 bright)."""
    video = np.full((frames, size, size, 3), level, dtype=np.uint8)
    for t in range(frames):
        video[t, 20:36, 4 * t : 4 * t + 16] = 255 - level
    write_clip(path, video, codec="mpeg4")
    return str(path)


class WebServer:
    """`python -m llava.serve.web ARGS --port P` as a real process, its stderr in a file."""

    def __init__(self, args: list[str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        self.command = [sys.executable, "-m", "llava.serve.web", *map(str, args), "--port", str(self.port)]
        self.process = None

    def start(self, timeout: float = 180) -> WebServer:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        env.pop("LLAVA_DEBUG", None)
        with open(self.log, "w") as err:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True
            )
        deadline = time.monotonic() + timeout
        while SERVING not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"the server ended with {self.process.returncode}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the server did not start in {timeout} s:\n{self.output()[-3000:]}")
            time.sleep(0.2)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        """Sends `sig` and waits for the end; returns the exit status (killed where it outlives `timeout`)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_browser():
    """Headless Chromium through selenium. Where chromium, chromedriver or selenium is missing:
    tiers.require_installed, a skip saying what and what installs it, a failure in CI."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path]
        require_installed(
            "chromium and chromedriver",
            ".ci/setup_browser.sh, or apt-get install chromium chromium-driver",
            f"{' and '.join(missing)} not found on PATH",
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        require_installed("selenium", "the dev extra: pip install -e '.[dev]', as `make venv` does", str(error))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(driver))


def artifacts_dir() -> Path:
    """Where tests leave files for people to look at: $TEST_ARTIFACTS_DIR, else test_artifacts/ (ignored by git)."""
    folder = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "test_artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
