"""Training throughput of a preset on this machine: the real loop on synthetic token windows.

    python -m hma_ros.train.benchmark --preset hma_small --batch-size 16 --steps 20 \\
        --threads 1 2 [--out out/benchmark_train.json]

Prints samples/s and steps/s per thread count (after ``--warmup`` untimed steps) and
writes them as JSON. Data loading is in-process and trivial, so this measures the model's
forward + backward + AdamW step, the settings mix included.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from hma_ros.model.config import EmbodimentSpec
from hma_ros.model.hma import HMA
from hma_ros.model.presets import make_config
from hma_ros.train.config import TrainConfig
from hma_ros.train.trainer import Trainer

log = logging.getLogger(__name__)

#: Action widths like the simulated robots' (7 joints + gripper at 20 Hz, a 2-D pusher).
SPECS = (EmbodimentSpec("arm", 8, 20.0), EmbodimentSpec("pusher", 2, 10.0))


class RandomWindows:
    def __init__(self, spec: EmbodimentSpec, config, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        T, h, w = config.max_frames, config.tokens_h, config.tokens_w
        self.spec = spec
        self.tokens = torch.randint(0, config.vocab_size, (n, T, h, w), generator=g)
        self.actions = torch.randn(n, T, spec.step_action_dim, generator=g)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "actions": self.actions[i], "embodiment": self.spec.name}


def measure(preset: str, batch_size: int, steps: int, warmup: int, threads: int, settings: dict) -> dict:
    torch.set_num_threads(threads)
    config = make_config(preset, SPECS)
    torch.manual_seed(0)
    model = HMA(config)
    sources = {s.name: RandomWindows(s, config) for s in SPECS}
    times = []
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig.from_dict(
            {
                "out_dir": out,
                "steps": warmup + steps,
                "settings": settings,
                "tensorboard": False,
                "log_every": 10**6,
                "device": "cpu",
                "data": {"batch_size": batch_size},
                "eval": {"every": 0},
                "checkpoint": {"every": 0},
            }
        )
        trainer = Trainer(cfg, model, sources)
        step = trainer.optimizer.step

        def timed_step(*a, **kw):  # wall and process CPU time from one optimiser step to the next
            times.append((time.perf_counter(), time.process_time()))
            return step(*a, **kw)

        trainer.optimizer.step = timed_step
        trainer.save = lambda: None  # no checkpoint at the end
        trainer.fit()
    first = times[warmup - 1] if warmup else times[0]
    span, cpu = times[-1][0] - first[0], times[-1][1] - first[1]
    n = steps if warmup else steps - 1
    return {
        "preset": preset,
        "threads": threads,
        "batch_size": batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps_per_s": n / span,
        "samples_per_s": n * batch_size / span,
        # On a shared, oversubscribed machine wall time overstates the cost; CPU seconds per
        # step (summed over threads) is what the run used.
        "cpu_s_per_step": cpu / n,
        "settings": settings,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="hma_small")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = {"forward_dynamics": 0.4, "full": 0.3, "video": 0.2, "policy": 0.1}
    results = []
    before = torch.get_num_threads()
    for t in args.threads:
        try:
            r = measure(args.preset, args.batch_size, args.steps, args.warmup, t, settings)
        finally:
            torch.set_num_threads(before)
        results.append(r)
        print(  # noqa: T201 (a benchmark prints its numbers)
            f"{r['preset']} batch {r['batch_size']} threads {t}: "
            f"{r['samples_per_s']:.1f} samples/s, {r['steps_per_s']:.2f} steps/s, "
            f"{r['cpu_s_per_step']:.2f} CPU s/step"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
