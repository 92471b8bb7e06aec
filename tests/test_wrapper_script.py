import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts_italian" / "test_gpt2_wrapper.py"


def test_wrapper_check_script_passes():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8/8 checks passed" in result.stdout
    assert "FAIL" not in result.stdout
