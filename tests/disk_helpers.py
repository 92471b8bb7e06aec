"""Small real disks for tests of full and read-only file systems: tmpfs mounts, unmounted when the test
ends. Root ignores file modes, so a read-only folder has to be a read-only mount. Mounting needs root (or
CAP_SYS_ADMIN), which a machine may refuse: such a test is skipped as the privileged tier "tmpfs mounts",
in CI too, and the run's summary line names the tier and the reason (tests/tiers.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tiers import skip_privileged


class SmallDisks:
    """tmpfs mounts made for one test (the `disks` fixture of conftest.py)."""

    def __init__(self, root: Path):
        self.root, self.mounted = root, []

    def mount(self, name: str = "disk", size: str = "1m", read_only: bool = False) -> Path:
        folder = self.root / name
        folder.mkdir()
        if shutil.which("mount") is None:
            skip_privileged("tmpfs mounts", "no mount command: a small disk cannot be made")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if done.returncode != 0:
            # mount's first line, the folder named as such: one reason for every test the summary line counts
            said = done.stderr.strip().splitlines()[0] if done.stderr.strip() else f"exit status {done.returncode}"
            reason = said.replace(str(folder), "<folder>")
            skip_privileged("tmpfs mounts", f"a small disk cannot be made here (mount -t tmpfs: {reason})")
        self.mounted.append(folder)
        if read_only:
            assert self.remount(folder, "ro").returncode == 0
        return folder

    @staticmethod
    def remount(folder: Path, options: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], capture_output=True, text=True)

    def unmount_all(self) -> None:
        for folder in reversed(self.mounted):
            if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(folder)], capture_output=True)
