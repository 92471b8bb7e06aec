import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts_italian" / "test_gpt2_wrapper.py"


def test_wrapper_check_script_passes():
    # A script's folder, not the checkout, heads its path: this checkout's llava comes first, so that the
    # script is checked against the package beside it (an editable install may name another checkout).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8/8 checks passed" in result.stdout
    assert "FAIL" not in result.stdout
