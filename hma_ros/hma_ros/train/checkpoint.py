"""Training checkpoints: the model's own checkpoint plus the optimiser and the step.

A checkpoint folder ``<out_dir>/checkpoints/step_XXXXXXXX/`` holds

- ``config.json`` + ``model.safetensors``: written by ``hma_ros.model.checkpoint``, so the
  folder is also a plain model checkpoint (``load_model(folder)`` rebuilds the model);
- ``trainer_state.safetensors``: the optimiser state, one tensor per (parameter name, slot),
  e.g. ``exp_avg/blocks.0.attn.qkv.weight`` — no pickle anywhere;
- ``trainer.json``: step, seed, world size, optimiser hyper-parameters, the training config.

It is written into a hidden staging folder and renamed into place, so a crash leaves either
the previous checkpoints or a complete new one; stale staging folders are removed on start.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATE_NAME = "trainer_state.safetensors"
TRAINER_JSON = "trainer.json"
_PREFIX = "step_"
_STAGING = ".staging-"


class CheckpointError(RuntimeError):
    """A training checkpoint is missing, incomplete or does not match the run."""


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def step_folder(out_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(out_dir) / f"{_PREFIX}{step:08d}"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (renamed into place, ``trainer.json`` present), oldest first."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(_PREFIX) and (p / TRAINER_JSON).is_file():
            try:
                found.append((int(p.name[len(_PREFIX) :]), p))
            except ValueError:
                continue
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def remove_stale_staging(out_dir: str | Path) -> None:
    root = checkpoint_dir(out_dir)
    if root.is_dir():
        for p in root.glob(f"{_STAGING}*"):
            log.warning("removing incomplete checkpoint %s (left by an interrupted save)", p)
            shutil.rmtree(p, ignore_errors=True)


# ---- optimiser state <-> named tensors ------------------------------------------------------
def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    """Names of each param group's parameters, in the optimiser's order."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = []
    for g in optimizer.param_groups:
        missing = [i for i, p in enumerate(g["params"]) if id(p) not in by_id]
        if missing:
            raise CheckpointError("the optimiser holds parameters that are not the model's")
        names.append([by_id[id(p)] for p in g["params"]])
    return names


def optimizer_to_tensors(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten ``optimizer.state_dict()`` into ``{"slot/param": tensor}`` plus JSON metadata."""
    sd = optimizer.state_dict()
    names = _param_names(model, optimizer)
    flat_names = [n for group in names for n in group]
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in sd["state"].items():
        pname = flat_names[idx]
        for slot, v in slots.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{slot}/{pname}"] = v.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(pname, {})[slot] = v
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": group_names}
        for g, group_names in zip(sd["param_groups"], names, strict=True)
    ]
    return tensors, {"param_groups": groups, "scalar_state": scalars}


def load_optimizer_tensors(
    model: nn.Module, optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Inverse of ``optimizer_to_tensors``; the parameter names must match the optimiser's."""
    names = _param_names(model, optimizer)
    saved = [g["params"] for g in meta["param_groups"]]
    if saved != names:
        raise CheckpointError(
            "optimiser parameter groups differ from the checkpoint's (model or frozen parameters changed): "
            f"checkpoint has {sum(map(len, saved))} parameters in {len(saved)} groups, "
            f"the run {sum(map(len, names))} in {len(names)}"
        )
    flat = [n for group in names for n in group]
    index = {n: i for i, n in enumerate(flat)}
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        slot, _, pname = key.partition("/")
        state.setdefault(index[pname], {})[slot] = t
    for pname, slots in meta.get("scalar_state", {}).items():
        state.setdefault(index[pname], {}).update(slots)
    groups = []
    offset = 0
    for g in meta["param_groups"]:
        n = len(g["params"])
        # JSON made tuples (betas) lists; torch keeps them as tuples.
        hyper = {k: tuple(v) if isinstance(v, list) else v for k, v in g.items() if k != "params"}
        groups.append({**hyper, "params": list(range(offset, offset + n))})
        offset += n
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ---- save / load ----------------------------------------------------------------------------
def _model_checkpoint_io() -> tuple[Any, Any]:
    """``(save_checkpoint, load_model)`` of ``hma_ros.model.checkpoint`` (imported late)."""
    from hma_ros.model import checkpoint as model_checkpoint

    return model_checkpoint.save_checkpoint, model_checkpoint.load_model


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_training_checkpoint(
    out_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_info: dict[str, Any],
    keep_last: int | None = None,
    model_extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``step_XXXXXXXX/`` atomically (staging folder + rename) and prune old ones.

    ``model_extra`` goes to the model checkpoint's ``extra.json`` (what a user of the model
    alone needs: the tokenizer, the step).
    """
    save_checkpoint, _ = _model_checkpoint_io()
    final = step_folder(out_dir, step)
    staging = checkpoint_dir(out_dir) / f"{_STAGING}{final.name}-{os.getpid()}"
    checkpoint_dir(out_dir).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    save_checkpoint(staging, model, extra=model_extra)
    tensors, opt_meta = optimizer_to_tensors(model, optimizer)
    save_file(tensors, str(staging / STATE_NAME), metadata={"format_version": str(FORMAT_VERSION)})
    info = {"format_version": FORMAT_VERSION, "step": step, "optimizer": opt_meta, **trainer_info}
    with open(staging / TRAINER_JSON, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    for p in staging.iterdir():
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(staging)
    old = None
    if final.exists():  # a re-run of the same step: swap, never merge
        old = final.parent / f"{_STAGING}old-{final.name}-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved checkpoint %s", final)
    if keep_last:
        for _, old in list_checkpoints(out_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_trainer_json(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / TRAINER_JSON
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a training checkpoint: no {TRAINER_JSON}")
    with open(path) as f:
        info = json.load(f)
    if info.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {info.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    return info


def load_training_checkpoint(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model weights and optimiser state in place; return ``trainer.json``.

    The model is rebuilt from the folder's ``config.json`` by ``load_model`` and must have
    the same config as ``model`` — a resumed run cannot silently change architecture.
    """
    _, load_model = _model_checkpoint_io()
    folder = Path(folder)
    info = read_trainer_json(folder)
    saved = load_model(folder)
    if saved.config != model.config:
        raise CheckpointError(
            f"{folder}: the checkpoint's model config differs from this run's; "
            "start a new out_dir or restore the original config"
        )
    model.load_state_dict(saved.state_dict(), strict=True)
    tensors = load_file(str(folder / STATE_NAME))
    load_optimizer_tensors(model, optimizer, tensors, info["optimizer"])
    return info
