"""The tokenizer interface every HMA variant codes against, and its on-disk format.

A tokenizer turns uint8 RGB frames ``(..., H, W, 3)`` into a grid of tokens ``(..., h, w)``
(discrete: one integer id per cell) or latents ``(..., h, w, C)`` (continuous: one vector per
cell) and back. The HMA model only sees the grid, ``vocab_factors`` or ``token_dim``.

On disk a tokenizer is a folder with ``tokenizer.json`` (type, kind, config, id) and
``tokenizer.safetensors`` (weights and buffers; may be empty). The id is a hash of the config
and the weights, so a dataset records exactly which tokenizer made its tokens, and a loader
detects weights that do not belong to the JSON beside them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
JSON_NAME = "tokenizer.json"
WEIGHTS_NAME = "tokenizer.safetensors"
KINDS = ("discrete", "continuous")


class TokenizerLoadError(ValueError):
    """A tokenizer folder is missing, incomplete, corrupt or inconsistent (message says which)."""


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def as_pair(v: Any, name: str) -> tuple[int, int]:
    """``64`` or ``(64, 64)`` -> ``(64, 64)``, validated positive."""
    pair = (int(v), int(v)) if isinstance(v, int | np.integer) else tuple(int(x) for x in v)
    check(len(pair) == 2 and min(pair) > 0, f"{name} must be a positive int or (h, w), got {v!r}")
    return pair  # type: ignore[return-value]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; shipped files must be readable by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> float ``(B, 3, H, W)`` in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def float_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float ``(B, 3, H, W)`` in [-1, 1] -> uint8 ``(B, H, W, 3)`` (rounded, clipped)."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def psnr_uint8(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Mean over frames of the per-frame PSNR (dB, peak 255) of two uint8 ``(..., H, W, 3)``.

    Identical frames count as 100 dB so that a mean stays finite.
    """
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).float()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).float().to(a.device)
    check(a.shape == b.shape, f"psnr: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = (a - b).pow(2).reshape(-1, math.prod(a.shape[-3:])).mean(dim=1)  # (B,)
    psnr = torch.where(mse > 0, 10 * torch.log10(255.0**2 / mse.clamp_min(1e-12)), torch.full_like(mse, 100.0))
    return float(psnr.mean())


class Tokenizer(nn.Module):
    """Base class: frames <-> tokens. Subclasses implement ``_encode`` / ``_decode`` on chunks.

    Class attributes of a subclass: ``type_name`` (registry key, e.g. ``"fsq"``), ``kind``
    (``"discrete"`` or ``"continuous"``), ``config_class`` (a frozen dataclass with an
    ``image_size`` field). Instances expose ``image_size``, ``grid`` and ``vocab_factors``
    (discrete) or ``token_dim`` (continuous).
    """

    type_name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    #: Frames per forward pass in ``encode`` / ``decode``; bounds peak memory on big inputs.
    chunk_size: int = 64

    def __init__(self, config: Any) -> None:
        super().__init__()
        check(
            isinstance(config, self.config_class),
            f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}",
        )
        self.config = config

    # ---- shapes -------------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config.image_size)  # type: ignore[return-value]

    @property
    def grid(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def vocab_factors(self) -> tuple[int, ...]:
        raise AttributeError(f"{self.type_name} is a {self.kind} tokenizer: it has no vocab_factors")

    @property
    def vocab_size(self) -> int:
        return math.prod(self.vocab_factors)

    @property
    def token_dim(self) -> int:
        raise AttributeError(f"{self.type_name} is a {self.kind} tokenizer: it has no token_dim")

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        """Shapes as plain data (what datasets and model configs record)."""
        d: dict[str, Any] = {
            "type": self.type_name,
            "kind": self.kind,
            "image_size": list(self.image_size),
            "grid": list(self.grid),
        }
        if self.kind == "discrete":
            d["vocab_factors"] = list(self.vocab_factors)
        else:
            d["token_dim"] = self.token_dim
        return d

    # ---- subclass hooks: one chunk, on the module's device -------------------------------
    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> long ``(B, h, w)`` or float ``(B, h, w, C)``."""
        raise NotImplementedError

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """long ``(B, h, w)`` or float ``(B, h, w, C)`` -> uint8 ``(B, H, W, 3)``."""
        raise NotImplementedError

    # ---- public API --------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(..., H, W, 3)`` (numpy, memmap or tensor) -> tokens on the module's device.

        Returns a LongTensor ``(..., h, w)`` (discrete) or a FloatTensor ``(..., h, w, C)``
        (continuous). Inputs are processed ``chunk_size`` frames at a time, so a memmap of a
        whole dataset is never read at once.
        """
        H, W = self.image_size
        shape = tuple(frames.shape)
        if frames.dtype not in (np.uint8, torch.uint8) or len(shape) < 3 or shape[-3:] != (H, W, 3):
            raise ValueError(
                f"{self.type_name} tokenizer expects uint8 frames (..., {H}, {W}, 3), "
                f"got {frames.dtype} {shape}; resize with hma_ros.runtime.image.fit_image"
            )
        lead = shape[:-3]
        flat = frames.reshape(-1, H, W, 3)
        out = [
            self._encode(self._chunk_to_tensor(flat[i : i + self.chunk_size], torch.uint8))
            for i in range(0, flat.shape[0], self.chunk_size)
        ]
        tok = torch.cat(out) if out else self._encode(self._chunk_to_tensor(flat, torch.uint8))
        return tok.reshape(*lead, *tok.shape[1:])

    @torch.no_grad()
    def decode(self, tokens: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Tokens ``(..., h, w)`` / latents ``(..., h, w, C)`` -> uint8 frames ``(..., H, W, 3)``."""
        h, w = self.grid
        shape = tuple(tokens.shape)
        if self.kind == "discrete":
            tail, dtype = (h, w), torch.long
            ok = len(shape) >= 2 and shape[-2:] == tail and _is_integer(tokens)
        else:
            tail, dtype = (h, w, self.token_dim), torch.float32
            ok = len(shape) >= 3 and shape[-3:] == tail
        if not ok:
            raise ValueError(
                f"{self.type_name} tokenizer decodes {'integer ids' if self.kind == 'discrete' else 'floats'} "
                f"(..., {', '.join(map(str, tail))}), got {tokens.dtype} {shape}"
            )
        lead = shape[: len(shape) - len(tail)]
        flat = tokens.reshape(-1, *tail)
        if self.kind == "discrete":
            lo, hi = int(flat.min()) if flat.shape[0] else 0, int(flat.max()) if flat.shape[0] else 0
            check(
                lo >= 0 and hi < self.vocab_size,
                f"token ids must be in [0, {self.vocab_size}), got range [{lo}, {hi}]",
            )
        out = [
            self._decode(self._chunk_to_tensor(flat[i : i + self.chunk_size], dtype))
            for i in range(0, flat.shape[0], self.chunk_size)
        ]
        H, W = self.image_size
        img = torch.cat(out) if out else torch.zeros(0, H, W, 3, dtype=torch.uint8, device=self.device)
        return img.reshape(*lead, H, W, 3)

    def reconstruct(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``decode(encode(frames))``: what the world model can at best reproduce."""
        return self.decode(self.encode(frames))

    def _chunk_to_tensor(self, x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            # Copy read-only (memmap) or strided chunks: torch wants writable contiguous memory.
            x = x if x.flags.writeable and x.flags.c_contiguous else np.array(x)
            x = torch.from_numpy(x)
        t = x
        return t.to(device=self.device, dtype=dtype)

    # ---- identity and persistence -------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self.config)))  # tuples -> lists

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything saved in ``tokenizer.safetensors`` (contiguous CPU copies)."""
        return {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}

    @property
    def tokenizer_id(self) -> str:
        """``<type>-<16 hex>``: SHA-256 of the type, config and every saved tensor's bytes."""
        return _compute_id(self.type_name, self.config_dict(), self.tensors())

    def save(self, folder: str | os.PathLike) -> str:
        """Write ``tokenizer.safetensors`` then ``tokenizer.json`` (each atomically); return the id.

        The JSON goes last and records the id of the weights beside it, so a crash between
        the two writes leaves a folder that ``load_tokenizer`` rejects by name rather than a
        silently mismatched pair.
        """
        from safetensors.torch import save as st_save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = self.tensors()
        tid = _compute_id(self.type_name, self.config_dict(), tensors)
        atomic_write_bytes(folder / WEIGHTS_NAME, st_save(tensors, metadata={"tokenizer_id": tid}))
        meta = {
            "format_version": FORMAT_VERSION,
            "id": tid,
            "config": self.config_dict(),
            **self.describe(),
        }
        atomic_write_json(folder / JSON_NAME, meta)
        log.info("saved %s tokenizer %s to %s", self.type_name, tid, folder)
        return tid


def _is_integer(x: np.ndarray | torch.Tensor) -> bool:
    if isinstance(x, torch.Tensor):
        return not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    return np.issubdtype(x.dtype, np.integer)


def _compute_id(type_name: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"type": type_name, "config": config}, sort_keys=True).encode())
    for k in sorted(tensors):
        t = tensors[k]
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return f"{type_name}-{h.hexdigest()[:16]}"


def config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a config dataclass, naming unknown or missing fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    check(not unknown, f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
