"""Rollout throughput of a checkpoint through ``WorldModelRunner``, without ROS: what the node's
model thread can deliver on this machine, per backend and device.

    python -m hma_ros.runtime.throughput [--robot franka] [--device cuda] [--backend torch]
        [--candidates 1,8,32] [--horizon 8] [--out out/throughput.json]

A live context of ``--context`` frames (a smooth synthetic scene: a square moving across a
gradient, the same on every device) is observed first; then each row times ``--repeats``
rollouts of N candidates over H steps after ``--warmup`` untimed ones, and reports the median
seconds per rollout, predicted frames per second (N * H / s) and the live ``predict`` latency.
On CUDA every timing is synchronised. The shipped model of ``--robot`` is used unless
``--checkpoint`` names another.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hma_ros.model.benchmark import synchronize
from hma_ros.runtime.backends import BACKENDS, BackendUnavailableError, resolve_device
from hma_ros.runtime.robot_config import load_robot_config
from hma_ros.runtime.runner import WorldModelRunner


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201 (a benchmark prints its table)


def scene(num_frames: int, size: tuple[int, int] = (128, 128)) -> np.ndarray:
    """``num_frames`` uint8 frames (T, H, W, 3): a grey square crossing a colour gradient."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 96)], -1)
    out = np.repeat(base[None].astype(np.uint8), num_frames, axis=0)
    side = max(h // 6, 2)
    for t in range(num_frames):
        x0 = (t * w // max(num_frames, 1)) % (w - side)
        out[t, h // 2 - side // 2 : h // 2 + side // 2, x0 : x0 + side] = 200
    return out


def observe_scene(runner: WorldModelRunner, num_frames: int, seed: int = 0) -> None:
    """Fill ``runner``'s live context with :func:`scene` and small seeded actions."""
    rng = np.random.default_rng(seed)
    frames = scene(num_frames)
    for t, frame in enumerate(frames):
        action = None if t == 0 else (0.01 * rng.standard_normal(runner.step_action_dim)).astype(np.float32)
        runner.observe(frame, action, stamp=0.5 * t)


def _timed(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def measure(
    runner: WorldModelRunner,
    candidates: list[int],
    horizon: int,
    repeats: int = 5,
    warmup: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Live ``predict(1)`` latency and one row per N: median rollout seconds and frames/s."""
    device = runner.device
    live = _timed(lambda: runner.predict(1), device, repeats, warmup)
    rows = []
    rng = np.random.default_rng(seed)
    for n in candidates:
        actions = (0.01 * rng.standard_normal((n, horizon, runner.step_action_dim))).astype(np.float32)
        secs = _timed(lambda a=actions: runner.rollout(a, return_frames=True), device, repeats, warmup)
        s = statistics.median(secs)
        row = {"candidates": n, "horizon": horizon, "seconds": s, "max_seconds": max(secs)}
        rows.append(row | {"frames_per_s": n * horizon / s})
    return {"live_predict_ms": 1e3 * statistics.median(live), "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="franka", help="robot config (its shipped model unless --checkpoint)")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the robot's shipped model)")
    ap.add_argument("--backend", default="torch", choices=BACKENDS)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--candidates", default="1,8,32", help="comma-separated N")
    ap.add_argument("--horizon", type=int, default=8)
    ap.add_argument("--context", type=int, default=4, help="live context frames observed first")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("out/throughput.json"))
    args = ap.parse_args(argv)

    try:
        device = resolve_device(args.device)
    except BackendUnavailableError as e:
        ap.error(f"--device {args.device}: no CUDA GPU to run on: {e}")
    except ValueError as e:
        ap.error(str(e))
    torch.set_num_threads(args.threads)
    robot = load_robot_config(args.robot)
    checkpoint = args.checkpoint or robot.checkpoint_path()
    candidates = [int(n) for n in args.candidates.split(",") if n.strip()]
    if not candidates or min(candidates) < 1 or args.horizon < 1 or args.repeats < 1:
        ap.error("--candidates, --horizon and --repeats must be positive")
    options = {"device": args.device} if device.type != "cpu" else {}
    t0 = time.perf_counter()
    runner = WorldModelRunner.from_checkpoint(checkpoint, robot, backend=args.backend, backend_options=options)
    load_s = time.perf_counter() - t0
    observe_scene(runner, args.context)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    _say(f"throughput: {runner.model_id} on {args.backend}/{device} ({where}), loaded in {load_s:.2f} s")
    result = measure(runner, candidates, args.horizon, args.repeats, args.warmup)
    _say(f"live predict(1): {result['live_predict_ms']:.1f} ms")
    _say(f"{'N':>4} {'H':>3} {'s/rollout':>10} {'max s':>8} {'frames/s':>10}")
    for r in result["rows"]:
        _say(
            f"{r['candidates']:>4d} {r['horizon']:>3d} {r['seconds']:>10.4f} {r['max_seconds']:>8.4f} "
            f"{r['frames_per_s']:>10.1f}"
        )
    result |= {
        "model": runner.model_id,
        "backend": args.backend,
        "device": str(device),
        "device_name": where,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_seconds": load_s,
        "context": args.context,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _say(f"throughput: wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
