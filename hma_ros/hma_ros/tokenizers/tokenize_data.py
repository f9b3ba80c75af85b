"""Read frames from the on-disk dataset format and tokenise a dataset in place.

Datasets are :class:`hma_ros.data.format.EmbodimentDataset` folders (``metadata.json``,
``frames.u8`` ...). Tokenising encodes every frame and stores the result through the data
module's writer, ``EmbodimentDataset.write_tokens``: ``tokens/<tokenizer_id>.i32``
``(F, h, w)`` int32 (discrete) or ``tokens/<tokenizer_id>.f32`` ``(F, h, w, C)`` float32
(continuous), recorded under ``metadata.json["tokenized"][tokenizer_id]``. The id names the
tokenizer exactly (hash of config and weights), so ``WindowDataset(..., tokenizer_id=...)``
reads tokens that match the model's tokenizer or fails.

CLI::

    python -m hma_ros.tokenizers.tokenize_data --tokenizer models/tokenizer_fsq64 \
        --data datasets/sim[,...] [--force]

A ``--data`` folder is one embodiment folder or a root holding several.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import torch

from hma_ros.data.format import METADATA, EmbodimentDataset

from .base import Tokenizer

log = logging.getLogger(__name__)


def embodiment_folders(path: str | os.PathLike) -> list[Path]:
    """``path`` itself if it is an embodiment folder, else its subfolders that are."""
    path = Path(path)
    if (path / METADATA).is_file():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{METADATA}"))
    if not found:
        raise FileNotFoundError(f"{path}: no {METADATA} in it or in its subfolders")
    return found


def open_frames(path: str | os.PathLike) -> np.ndarray:
    """Frames of one dataset folder (validated read-only memmap) or of a ``.npy`` file."""
    path = Path(path)
    arr = np.load(path, mmap_mode="r") if path.suffix == ".npy" else EmbodimentDataset.open(path).frames
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


def encode_all(tokenizer: Tokenizer, frames: np.ndarray, chunk: int = 256, desc: str = "tokenise") -> np.ndarray:
    """Encode ``frames`` (N, H, W, 3) chunk by chunk into int32 ids or float32 latents."""
    from tqdm import tqdm

    discrete = tokenizer.kind == "discrete"
    tail = tokenizer.grid if discrete else (*tokenizer.grid, tokenizer.token_dim)
    out = np.empty((frames.shape[0], *tail), np.int32 if discrete else np.float32)
    for i in tqdm(range(0, frames.shape[0], chunk), desc=desc, unit="chunk", mininterval=2.0):
        out[i : i + chunk] = tokenizer.encode(frames[i : i + chunk]).cpu().numpy()
    return out


def tokenize_folder(folder: str | os.PathLike, tokenizer: Tokenizer, chunk: int = 256, force: bool = False) -> Path:
    """Tokenise one dataset folder in place; returns the written array's path.

    Skips the work (and says so) when the dataset already holds this tokenizer's output for
    every frame, unless ``force``.
    """
    ds = EmbodimentDataset.open(folder, writable=True)
    if ds.image_size != tokenizer.image_size:
        raise ValueError(
            f"{folder}: frames are {ds.image_size}, tokenizer {tokenizer.tokenizer_id} expects {tokenizer.image_size}"
        )
    tid = tokenizer.tokenizer_id
    rec = ds.tokenizers.get(tid)
    if rec and rec["shape"][0] == ds.num_frames and not force:
        log.info("%s: already tokenised by %s, skipping", folder, tid)
        return ds.folder / rec["file"]
    tokens = encode_all(tokenizer, ds.frames, chunk, desc=f"tokenise {ds.spec.name}")
    ds.write_tokens(tid, tokens, kind=tokenizer.kind)
    rec = ds.tokenizers[tid]
    log.info("%s: wrote %s %s with %s", folder, rec["file"], tuple(rec["shape"]), tid)
    return ds.folder / rec["file"]


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
