"""Generate a simulated dataset for one embodiment (resumable, seeded).

    python -m hma_ros.sim.generate --embodiment franka --episodes 100 --out /data/sim --seed 0

writes ``<out>/<embodiment>/`` in the :mod:`hma_ros.data.format` layout. Episode ``i`` is
generated from ``(seed, i)`` alone, so a run that is stopped and started again skips the
episodes already written and produces the same data as one uninterrupted run.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from hma_ros.data.format import DatasetError, EmbodimentDataset
from hma_ros.runtime.image import fit_image
from hma_ros.sim.embodiments import EMBODIMENTS, SimEmbodiment, get_embodiment
from hma_ros.sim.policies import ArmPolicy, PushTPolicy, draw_mode

log = logging.getLogger(__name__)

DEFAULT_SECONDS = 10.0
IMAGE_SIZE = (64, 64)


def make_sim(emb: SimEmbodiment, task: str):
    if emb.backend == "robosuite":
        from hma_ros.sim.robosuite_sim import RobosuiteSim

        return RobosuiteSim(emb, task)
    if emb.backend == "pusht":
        from hma_ros.sim.pusht_sim import PushTSim

        return PushTSim(emb, task)
    raise ValueError(f"unknown backend {emb.backend!r}")


def episode_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def run_episode(
    sim, emb: SimEmbodiment, seed: int, steps: int, frame_every: int, image_size=IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One episode: frames (steps / frame_every, h, w, 3), actions (steps, A), info."""
    rng = np.random.default_rng(seed)
    mode = draw_mode(rng)
    sim.reset(seed)
    policy = (PushTPolicy if emb.backend == "pusht" else ArmPolicy)(sim, rng, mode)
    frames, actions = [], np.zeros((steps, emb.action_dim), np.float32)
    for k in range(steps):
        if k % frame_every == 0:
            frames.append(fit_image(sim.render(), image_size))
        actions[k] = policy.act()
        sim.step(actions[k])
    info = {"seed": seed, "task": sim.task, "policy": mode, "success": sim.success()}
    if getattr(policy, "fault", None):
        info["fault"] = policy.fault
    return np.stack(frames), actions, info


def replay_episode(sim, seed: int, actions: np.ndarray, frame_every: int, image_size=IMAGE_SIZE) -> np.ndarray:
    """Re-simulate from an episode's seed under given (e.g. perturbed) actions; returns its frames.

    With the recorded actions (``episode_info[i]["seed"]``, ``"task"``) this reproduces the
    stored frames up to float32 rounding of the actions: the ground truth for evaluating a
    world model's rollouts under actions nobody recorded.
    """
    sim.reset(seed)
    frames = []
    for k, a in enumerate(np.asarray(actions, np.float64)):
        if k % frame_every == 0:
            frames.append(fit_image(sim.render(), image_size))
        sim.step(a)
    return np.stack(frames)


def generate(
    embodiment: str,
    episodes: int,
    out: str | os.PathLike,
    seed: int = 0,
    steps: int | None = None,
    tasks: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write episodes ``[already written, episodes)`` of ``embodiment``; returns timing numbers."""
    emb = get_embodiment(embodiment)
    stride = int(round(emb.control_hz / 2.0))
    steps = int(steps) if steps is not None else int(DEFAULT_SECONDS * emb.control_hz)
    steps -= steps % stride
    if steps < stride:
        raise ValueError(f"{embodiment}: --steps must be >= one 2 Hz step ({stride} control steps)")
    tasks = list(tasks or emb.tasks)
    unknown = [t for t in tasks if t not in emb.tasks]
    if unknown:
        raise ValueError(f"{embodiment}: tasks {unknown} not supported; choose from {list(emb.tasks)}")
    source = {"generator": "hma_ros.sim.generate", "seed": int(seed), "steps": steps, "tasks": tasks}
    ds = EmbodimentDataset.create(
        Path(out) / embodiment,
        emb.name,
        emb.action_dim,
        emb.control_hz,
        image_size=IMAGE_SIZE,
        frame_every=stride,  # frames at 2 Hz: all the model reads
        action_names=emb.action_names,
        source=source,
        exist_ok=True,
    )
    old = {k: ds.source.get(k) for k in source}
    if ds.num_episodes and old != source:
        raise DatasetError(f"{ds.folder}: was generated with {old}, resuming with {source} would mix two datasets")
    ds.update_source(**source)
    start = ds.num_episodes
    sims: dict[str, Any] = {}
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, initial=min(start, episodes), desc=embodiment, unit="ep")
    successes = 0
    try:
        for i in range(start, episodes):
            task = tasks[i % len(tasks)]
            if task not in sims:
                sims[task] = make_sim(emb, task)
            frames, actions, info = run_episode(sims[task], emb, episode_seed(seed, i), steps, stride)
            ds.append_episode(frames, actions, info)
            successes += info["success"]
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        for sim in sims.values():
            sim.close()
    elapsed = time.perf_counter() - t0
    made = max(episodes - start, 0)
    stats = {
        "embodiment": embodiment,
        "written": made,
        "skipped": min(start, episodes),
        "episodes_total": ds.num_episodes,
        "seconds": round(elapsed, 2),
        "episodes_per_s": round(made / elapsed, 4) if made else None,
        "success_rate_new": round(successes / made, 3) if made else None,
        "bytes": sum(p.stat().st_size for p in ds.folder.rglob("*") if p.is_file()),
    }
    log.info("%s", stats)
    return stats


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m hma_ros.sim.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--embodiment", required=True, choices=sorted(EMBODIMENTS))
    p.add_argument("--episodes", type=int, required=True, help="total episodes wanted in the dataset")
    p.add_argument("--out", required=True, help="dataset root; writes <out>/<embodiment>/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help=f"control steps per episode ({DEFAULT_SECONDS:g} s)")
    p.add_argument("--task", action="append", dest="tasks", help="robosuite task (repeatable); default: all")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return generate(
        args.embodiment, args.episodes, args.out, args.seed, args.steps, args.tasks, progress=not args.no_progress
    )


if __name__ == "__main__":
    main()
