"""Tokenizer latency: encode/decode milliseconds per frame, printed and written as JSON.

    python -m hma_ros.tokenizers.benchmark [--tokenizer DIR ...] [--threads 1] \
        [--out out/benchmark_tokenizers.json]

Without ``--tokenizer`` it measures freshly built default ``fsq``, ``vae`` and ``pixels``
tokenizers (same architecture as the trained ones, so the same cost).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import TOKENIZERS, Tokenizer, build_tokenizer, load_tokenizer

log = logging.getLogger(__name__)


def _ms_per_frame(fn, arg, frames: int, repeats: int) -> float:
    for _ in range(2):  # warm-up (allocator, oneDNN kernels)
        fn(arg)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)) / frames


def benchmark(tok: Tokenizer, batches: tuple[int, ...] = (1, 32), repeats: int = 10) -> dict[str, Any]:
    tok.eval()
    H, W = tok.image_size
    rng = np.random.default_rng(0)
    row: dict[str, Any] = {
        "id": tok.tokenizer_id,
        **tok.describe(),
        "params": sum(p.numel() for p in tok.parameters()),
    }
    for b in batches:
        frames = rng.integers(0, 256, (b, H, W, 3), dtype=np.uint8)
        tokens = tok.encode(frames)
        row[f"encode_ms_per_frame_b{b}"] = round(_ms_per_frame(tok.encode, frames, b, repeats), 3)
        row[f"decode_ms_per_frame_b{b}"] = round(_ms_per_frame(tok.decode, tokens, b, repeats), 3)
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", action="append", default=[], help="saved tokenizer folder (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=None, help="write the results here as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    toks = [load_tokenizer(d) for d in args.tokenizer] or [build_tokenizer(t) for t in TOKENIZERS]
    rows = [benchmark(t, repeats=args.repeats) for t in toks]
    for r in rows:
        log.info(
            "%-24s params %8d  encode %.2f ms/frame (b1) %.2f (b32)  decode %.2f (b1) %.2f (b32)",
            r["id"], r["params"], r["encode_ms_per_frame_b1"], r["encode_ms_per_frame_b32"],
            r["decode_ms_per_frame_b1"], r["decode_ms_per_frame_b32"],
        )  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        machine = platform.processor() or platform.machine()
        meta = {"threads": args.threads, "torch": torch.__version__, "machine": machine}
        Path(args.out).write_text(json.dumps({"meta": meta, "tokenizers": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
