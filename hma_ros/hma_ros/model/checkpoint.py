"""Self-describing checkpoints: ``config.json`` + ``model.safetensors`` (+ ``extra.json``).

The folder alone rebuilds the model (nanoGPT's habit), nothing is unpickled, and a folder
is written to a temporary sibling first and renamed into place, so a crash never leaves a
half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import HMAConfig
from .hma import HMA

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
EXTRA_FILE = "extra.json"


def save_checkpoint(
    folder: str | os.PathLike,
    model: HMA,
    extra: dict[str, Any] | None = None,
    weights_dtype: torch.dtype | None = None,
) -> Path:
    """Atomically write ``model`` (and JSON-serialisable ``extra``, e.g. step, metrics) to ``folder``.

    An existing checkpoint at ``folder`` is replaced. ``weights_dtype`` (e.g. ``torch.float16``)
    stores floating-point weights in that precision, halving a shipped model's size;
    ``load_model`` casts them back to the model's dtype.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        meta = {"format_version": FORMAT_VERSION, "model": "HMA", "config": model.config.to_dict()}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        if weights_dtype is not None:
            state = {k: v.to(weights_dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format_version": str(FORMAT_VERSION)})
        if extra is not None:
            (tmp / EXTRA_FILE).write_text(json.dumps(extra, indent=2) + "\n")
        old = None
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_config(folder: str | os.PathLike) -> HMAConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an HMA checkpoint folder")
    meta = json.loads(path.read_text())
    if meta.get("format_version") != FORMAT_VERSION or "config" not in meta:
        raise ValueError(
            f"{path}: unsupported checkpoint format_version {meta.get('format_version')!r} "
            f"(this code reads {FORMAT_VERSION})"
        )
    return HMAConfig.from_dict(meta["config"])


def load_extra(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / EXTRA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def load_model(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> HMA:
    """Rebuild the model from ``folder`` alone (strict: every weight must match the config)."""
    config = load_config(folder)
    model = HMA(config)
    state = load_file(str(Path(folder) / WEIGHTS_FILE), device=str(map_location))
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()
