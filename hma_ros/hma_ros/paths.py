"""Where the package's data (robot configs, shipped models, recordings) lives.

Installed (pip or colcon), data_files sit under ``<prefix>/share/hma_ros``; in a source
checkout (editable install, tests) they sit beside the Python package. ``HMA_ROS_SHARE``
overrides both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[1]  # hma_ros/ (the ament package folder)


def share_dir() -> Path:
    """The folder holding ``config/``, ``models/``, ``launch/`` and ``data/``."""
    env = os.environ.get("HMA_ROS_SHARE")
    if env:
        return Path(env)
    if (_SOURCE_ROOT / "package.xml").is_file():
        return _SOURCE_ROOT
    installed = Path(sys.prefix) / "share" / "hma_ros"
    if installed.is_dir():
        return installed
    raise FileNotFoundError(
        f"cannot find hma_ros data: not a source checkout ({_SOURCE_ROOT}) and no {installed}; set HMA_ROS_SHARE"
    )


def robot_config_path(robot: str) -> Path:
    return share_dir() / "config" / "robots" / f"{robot}.yaml"


def models_dir() -> Path:
    return share_dir() / "models"
