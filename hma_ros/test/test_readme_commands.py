"""Every ``python -m hma_ros...`` command the README shows starts from the repo root.

From the root, ``python -m`` puts the cwd first on sys.path, where the ament folder
``hma_ros/`` (no ``__init__.py``) would import as an empty namespace package and every command
would fail with "No module named hma_ros.<x>" if the installed regular package did not win over it
(PEP 420); this pins it for each command (``--help`` only: the commands are tested elsewhere).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MODULES = sorted(set(re.findall(r"python -m (hma_ros[\w.]+)", README.read_text()))) if README.is_file() else []


def test_readme_names_its_commands():
    assert len(MODULES) >= 8, MODULES


@pytest.mark.parametrize("module", MODULES)
def test_readme_command_runs_from_the_repo_root(module):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()
