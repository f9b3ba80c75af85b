"""Deterministic training batches: which embodiment, which setting, which windows, per step.

Every batch is a pure function of ``(seed, step)`` and the process's rank, so

- a resumed run sees exactly the batches an uninterrupted run would have seen (no sampler
  state to save), whatever ``num_workers`` is;
- under DDP all processes train the same embodiment and setting at a step (one embodiment per
  batch, paper §4; every rank runs the same modules, so DDP buckets line up), and each rank
  takes its own disjoint slice of one global draw of ``batch_size`` windows — the
  DistributedSampler equivalent for a with-replacement mixture. The global batch does not
  depend on the number of processes.

Embodiments are drawn with probability ``n_e ** temperature / sum`` (paper: ``n^(1/3)``,
``hma_ros.data.windows.temperature_weights``); windows are collated by the data layer's
``MixtureCollate``. Why not its ``MixtureSampler``: that one is an epoch stream whose ranks
take every ``world_size``-th batch, so a resume must replay it and ranks train different
embodiments in one step; the plan here is addressable by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from hma_ros.data.windows import temperature_weights


class WindowSource(Protocol):
    """One embodiment's windows (``hma_ros.data.WindowDataset`` satisfies it)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from parts (stable across processes and Python runs, unlike ``hash``)."""
    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


@dataclass(frozen=True)
class StepPlan:
    step: int
    embodiment: str
    setting: str
    indices: tuple[int, ...]  # this rank's windows in the embodiment's source


class BatchPlanner:
    """Decides the content of every step's batch from ``(seed, step, rank)`` alone."""

    def __init__(
        self,
        sizes: Mapping[str, int],
        settings: Mapping[str, float],
        *,
        batch_size: int,
        seed: int,
        temperature: float,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(f"data.batch_size={batch_size} must be divisible by the {world_size} processes")
        self.names = sorted(sizes)  # sorted: independent of config order
        self.sizes = [int(sizes[n]) for n in self.names]
        if min(self.sizes) <= 0:
            empty = [n for n, k in zip(self.names, self.sizes, strict=True) if k <= 0]
            raise ValueError(f"no training windows for {empty}")
        self.probs = temperature_weights(self.sizes, temperature)
        self.settings = sorted(settings)
        s = np.asarray([settings[k] for k in self.settings], dtype=np.float64)
        self.setting_probs = s / s.sum()
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.local_batch = batch_size // world_size

    def plan(self, step: int) -> StepPlan:
        rng = np.random.default_rng(derive_seed(self.seed, "batch", step))  # same on every rank
        e = int(rng.choice(len(self.names), p=self.probs))
        setting = self.settings[int(rng.choice(len(self.settings), p=self.setting_probs))]
        n = self.sizes[e]
        idx = rng.choice(n, size=self.batch_size, replace=n < self.batch_size)
        mine = idx[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
        return StepPlan(step, self.names[e], setting, tuple(int(i) for i in mine))


class StepBatches(IterableDataset):
    """Batches for steps ``start .. stop-1`` in order; worker ``k`` of ``K`` builds every K-th.

    ``DataLoader(StepBatches(...), batch_size=None, num_workers=K)`` returns workers'
    outputs round-robin, which restores step order.
    """

    def __init__(
        self,
        planner: BatchPlanner,
        sources: Mapping[str, WindowSource],
        collate: Callable[[list[Mapping[str, Any]]], dict[str, Any]],
        start: int,
        stop: int,
    ) -> None:
        super().__init__()
        self.planner, self.sources, self.collate = planner, sources, collate
        self.start, self.stop = start, stop

    def batch(self, step: int) -> dict[str, Any]:
        plan = self.planner.plan(step)
        src = self.sources[plan.embodiment]
        out = self.collate([src[i] for i in plan.indices])
        out["setting"] = plan.setting
        out["step"] = step
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        k, K = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(self.start + k, self.stop, K):
            yield self.batch(step)
