"""hma_ros.tokenizers: frames <-> token grids for the HMA world model.

``TOKENIZERS`` maps a type name to its class: ``fsq`` (discrete, FSQ), ``vae`` (continuous,
diffusers AutoencoderKL + patch 2), ``pixels`` (continuous, identity + patching).
``build_tokenizer(type, **config)`` makes a fresh one; ``load_tokenizer(folder)`` rebuilds a
saved one from ``tokenizer.json`` + ``tokenizer.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .base import (
    FORMAT_VERSION,
    JSON_NAME,
    KINDS,
    WEIGHTS_NAME,
    Tokenizer,
    TokenizerLoadError,
    config_from_dict,
    psnr_uint8,
)
from .fsq import FSQConfig, FSQTokenizer, merge_factors, split_factors
from .pixels import PixelConfig, PixelTokenizer
from .vae import VAEConfig, VAETokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    "fsq": FSQTokenizer,
    "vae": VAETokenizer,
    "pixels": PixelTokenizer,
}

__all__ = [
    "JSON_NAME",
    "KINDS",
    "TOKENIZERS",
    "WEIGHTS_NAME",
    "FSQConfig",
    "FSQTokenizer",
    "PixelConfig",
    "PixelTokenizer",
    "Tokenizer",
    "TokenizerLoadError",
    "VAEConfig",
    "VAETokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "merge_factors",
    "psnr_uint8",
    "read_tokenizer_json",
    "split_factors",
]


def build_tokenizer(type_name: str, **config: Any) -> Tokenizer:
    """A freshly initialised tokenizer of ``type_name`` with config fields ``config``."""
    if type_name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer type {type_name!r}; known: {sorted(TOKENIZERS)}")
    cls = TOKENIZERS[type_name]
    return cls(config_from_dict(cls.config_class, config))


def read_tokenizer_json(folder: str | os.PathLike) -> dict[str, Any]:
    """Parse and check ``<folder>/tokenizer.json`` without loading weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TokenizerLoadError(f"tokenizer folder {folder} does not exist")
    path = folder / JSON_NAME
    if not path.is_file():
        raise TokenizerLoadError(f"{path} is missing: {folder} is not a saved tokenizer")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerLoadError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise TokenizerLoadError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    missing = [k for k in ("format_version", "type", "config", "id") if k not in meta]
    if missing:
        raise TokenizerLoadError(f"{path} lacks the fields {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise TokenizerLoadError(
            f"{path} has format_version {meta['format_version']!r}; this code reads {FORMAT_VERSION}"
        )
    if meta["type"] not in TOKENIZERS:
        raise TokenizerLoadError(f"{path}: unknown tokenizer type {meta['type']!r}; known: {sorted(TOKENIZERS)}")
    return meta


def load_tokenizer(folder: str | os.PathLike, device: str | torch.device = "cpu") -> Tokenizer:
    """Rebuild a saved tokenizer of any type, in eval mode, on ``device``.

    Raises :class:`TokenizerLoadError` naming the problem: missing folder or file, bad JSON,
    unknown type or config field, unreadable safetensors, missing/unexpected/misshapen
    tensors, or weights whose hash differs from the id recorded in the JSON.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_tokenizer_json(folder)
    cls = TOKENIZERS[meta["type"]]
    try:
        tok = cls(config_from_dict(cls.config_class, meta["config"]))
    except (TypeError, ValueError) as e:
        raise TokenizerLoadError(f"{folder / JSON_NAME}: invalid {meta['type']} config: {e}") from e
    wpath = folder / WEIGHTS_NAME
    if not wpath.is_file():
        raise TokenizerLoadError(f"{wpath} is missing (the JSON beside it expects it)")
    try:
        tensors = load_file(str(wpath))
    except (SafetensorError, OSError, ValueError) as e:
        raise TokenizerLoadError(f"{wpath} is not a readable safetensors file ({e})") from e
    expected = tok.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise TokenizerLoadError(
            f"{wpath} does not match a {meta['type']} tokenizer with this config: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(tensors[k].shape)]
    if bad:
        k = bad[0]
        raise TokenizerLoadError(
            f"{wpath}: {len(bad)} tensors have the wrong shape, e.g. {k} is {tuple(tensors[k].shape)}, "
            f"expected {tuple(expected[k].shape)}"
        )
    tok.load_state_dict(tensors)
    tid = tok.tokenizer_id
    if tid != meta["id"]:
        raise TokenizerLoadError(
            f"{folder}: weights hash to {tid} but {JSON_NAME} records {meta['id']}: "
            f"{WEIGHTS_NAME} was changed, corrupted or copied from another tokenizer"
        )
    return tok.to(device).eval()
