"""Read frames from the on-disk dataset format and tokenise a dataset in place.

Dataset layout (docs/architecture.md, ``hma_ros.data``): one folder per embodiment with
``metadata.json`` and ``frames.u8``, a raw ``(N, H, W, 3)`` uint8 memmap. Tokenising writes
``tokens.i32`` ``(N, h, w)`` int32 (discrete) or ``latents.f32`` ``(N, h, w, C)`` float32
(continuous) beside the frames, then records the tokenizer in ``metadata.json`` under
``"tokenizer"`` (id, type, kind, grid, vocab_factors | token_dim, file, shape). Both writes
are atomic (temp file + rename); the metadata goes last.

CLI::

    python -m hma_ros.tokenizers.tokenize_data --tokenizer models/tokenizer_fsq64 \
        --data /work/datasets/sim_v1[,...] [--force]

A ``--data`` folder is one embodiment folder or a root holding several.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Tokenizer, atomic_write_json

log = logging.getLogger(__name__)

FRAMES_NAME = "frames.u8"
METADATA_NAME = "metadata.json"
TOKENS_NAME = "tokens.i32"
LATENTS_NAME = "latents.f32"


def embodiment_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` itself if it is an embodiment folder, else its subfolders that are."""
    path = Path(path)
    if (path / METADATA_NAME).is_file():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{METADATA_NAME}"))
    if not found:
        raise FileNotFoundError(f"{path}: no {METADATA_NAME} in it or in its subfolders")
    return found


def _image_hw(meta: dict[str, Any], where: Path) -> tuple[int, int]:
    for key in ("image_size", "image_shape", "frame_shape"):
        v = meta.get(key)
        if isinstance(v, int):
            return (v, v)
        if isinstance(v, list | tuple) and len(v) >= 2:
            return (int(v[0]), int(v[1]))
    raise ValueError(f"{where}: metadata has no image_size [H, W]; keys: {sorted(meta)}")


def open_frames(path: str | os.PathLike) -> np.ndarray:
    """Frames of one embodiment folder (read-only memmap ``(N, H, W, 3)`` uint8) or of a ``.npy``."""
    path = Path(path)
    if path.suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
    else:
        meta = json.loads((path / METADATA_NAME).read_text())
        H, W = _image_hw(meta, path / METADATA_NAME)
        fpath = path / FRAMES_NAME
        size = fpath.stat().st_size
        if size % (H * W * 3):
            raise ValueError(f"{fpath}: {size} bytes is not a whole number of {H}x{W}x3 frames")
        arr = np.memmap(fpath, dtype=np.uint8, mode="r", shape=(size // (H * W * 3), H, W, 3))
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 frames (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def frame_sources(spec: str) -> list[tuple[str, np.ndarray]]:
    """``DIR[,DIR|FILE.npy...]`` -> ``[(name, frames), ...]`` over every embodiment found."""
    out: list[tuple[str, np.ndarray]] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        p = Path(item)
        if p.suffix == ".npy":
            out.append((p.stem, open_frames(p)))
        else:
            out.extend((f.name, open_frames(f)) for f in embodiment_folders(p))
    if not out:
        raise ValueError(f"no frames found in {spec!r}")
    return out


def tokenize_folder(folder: str | os.PathLike, tokenizer: Tokenizer, chunk: int = 256, force: bool = False) -> Path:
    """Tokenise one embodiment folder in place; returns the written array's path.

    Skips the work (and says so) when the metadata already records this tokenizer id and
    the array has the right size, unless ``force``.
    """
    from tqdm import tqdm

    folder = Path(folder)
    meta_path = folder / METADATA_NAME
    meta = json.loads(meta_path.read_text())
    frames = open_frames(folder)
    if frames.shape[1:3] != tokenizer.image_size:
        raise ValueError(
            f"{folder}: frames are {frames.shape[1:3]}, tokenizer {tokenizer.tokenizer_id} expects "
            f"{tokenizer.image_size}"
        )
    tid = tokenizer.tokenizer_id
    discrete = tokenizer.kind == "discrete"
    name, dtype = (TOKENS_NAME, np.int32) if discrete else (LATENTS_NAME, np.float32)
    tail = tokenizer.grid if discrete else (*tokenizer.grid, tokenizer.token_dim)
    shape = (frames.shape[0], *tail)
    out_path = folder / name
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    recorded = meta.get("tokenizer") or {}
    if not force and recorded.get("id") == tid and out_path.is_file() and out_path.stat().st_size == nbytes:
        log.info("%s: already tokenised by %s, skipping", folder, tid)
        return out_path
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        out = np.memmap(tmp, dtype=dtype, mode="w+", shape=shape)
        for i in tqdm(range(0, shape[0], chunk), desc=f"tokenise {folder.name}", unit="chunk"):
            out[i : i + chunk] = tokenizer.encode(frames[i : i + chunk]).cpu().numpy().astype(dtype)
        out.flush()
        del out
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta["tokenizer"] = {**tokenizer.describe(), "id": tid, "file": name, "shape": list(shape)}
    atomic_write_json(meta_path, meta)
    log.info("%s: wrote %s %s with %s", folder, name, shape, tid)
    return out_path


def main(argv: list[str] | None = None) -> None:
    from . import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="saved tokenizer folder")
    ap.add_argument("--data", required=True, help="DIR[,DIR...]: embodiment folders or roots")
    ap.add_argument("--chunk", type=int, default=256, help="frames per encode call")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--force", action="store_true", help="re-tokenise even if already done")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tok = load_tokenizer(args.tokenizer, device=args.device)
    torch.set_grad_enabled(False)
    for item in filter(None, args.data.split(",")):
        for folder in embodiment_folders(item):
            tokenize_folder(folder, tok, chunk=args.chunk, force=args.force)


if __name__ == "__main__":
    main()
