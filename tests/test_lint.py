"""Linters as tests (the ros2/examples habit): ruff with the rules of pyproject.toml fails the suite."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed in this environment (tools/bootstrap.sh installs it)")
    # the rules are pyproject.toml's: pyflakes, syntax errors, import sorting, bugbear, pyupgrade
    out = subprocess.run([ruff, "check", "qpolicy_train", "qpolicy_hw", "qpolicy_ros",
                          "qpolicy_cli", "tests", "bench", "launch"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
