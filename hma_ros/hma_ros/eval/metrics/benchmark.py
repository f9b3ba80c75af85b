"""Time each metric on a batch of frames on this machine (CPU by default).

    python -m hma_ros.eval.metrics.benchmark --threads 1 --out metrics_bench.json

Frames are random uint8 (N, size, size, 3); FVD uses one clip of N frames per video. Each
entry reports wall-clock and process CPU seconds per call after one warm-up call (weights
loaded and cached), so CPU seconds stay meaningful on a shared, oversubscribed machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hma_ros.eval.metrics import FIDCalculator, FVDCalculator, dpsnr, lpips, perplexity, psnr, ssim


def _time(fn: Callable[[], object], reps: int) -> dict[str, float]:
    fn()  # warm-up: loads and caches the network
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(reps):
        fn()
    return {
        "wall_s": round((time.perf_counter() - wall) / reps, 4),
        "cpu_s": round((time.process_time() - cpu) / reps, 4),
    }


def run(frames: int, size: int, device: str, reps: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    logits, targets = torch.randn(frames, 64, 512), torch.randint(0, 512, (frames, 64))
    fid, fvd = FIDCalculator(device=device), FVDCalculator(device=device)
    fid.update(a, real=True)
    fid.update(b, real=False)
    fvd.update(np.stack([a, b]), real=True)
    fvd.update(np.stack([b, a]), real=False)
    cases: dict[str, Callable[[], object]] = {
        "psnr": lambda: psnr(a, b),
        "ssim": lambda: ssim(a, b),
        "dpsnr (5 random-action trials)": lambda: dpsnr(a, [b] * 5, a, time_axis=None),
        "lpips alex": lambda: lpips(a, b, device=device),
        "lpips vgg": lambda: lpips(a, b, net="vgg", device=device),
        "perplexity (64 tokens/frame, V=512)": lambda: perplexity(logits, targets),
        "fid features": lambda: fid.features(a),
        "fid compute (2048-d)": fid.compute,
        "fvd features (1 clip of all frames)": lambda: fvd.features(a[None]),
        "fvd compute (400-d)": fvd.compute,
    }
    return {name: _time(fn, reps) for name, fn in cases.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16, help="frames per batch (and per FVD clip, >= 9)")
    ap.add_argument("--size", type=int, default=64, help="frame height and width")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--reps", type=int, default=1, help="timed calls per metric after the warm-up")
    ap.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "threads": torch.get_num_threads()},
        "results": run(args.frames, args.size, args.device, args.reps),
    }
    text = json.dumps(result, indent=1)
    print(text)  # noqa: T201 (a benchmark prints its numbers)
    if args.out:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
