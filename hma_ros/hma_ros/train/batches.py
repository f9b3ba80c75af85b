"""Deterministic training batches: which embodiment, which setting, which windows, per step.

Every batch is a pure function of ``(seed, step)`` and the process's rank, so

- a resumed run sees exactly the batches an uninterrupted run would have seen (no sampler
  state to save), whatever ``num_workers`` is;
- under DDP all processes train the same embodiment and setting at a step (one embodiment per
  batch, paper §4; every rank runs the same modules, so DDP buckets line up), and each rank
  takes its own disjoint slice of one global draw of ``batch_size`` windows — the
  DistributedSampler equivalent for a with-replacement mixture. The global batch does not
  depend on the number of processes.

Embodiments are drawn with probability ``n_e ** temperature / sum`` (paper: ``n^(1/3)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info


class WindowSource(Protocol):
    """One embodiment's windows (``hma_ros.data.WindowDataset`` satisfies it)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from parts (stable across processes and Python runs, unlike ``hash``)."""
    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def mixture_weights(sizes: Sequence[int], temperature: float) -> np.ndarray:
    """Sampling probabilities ``n ** temperature`` normalised (paper: temperature 1/3)."""
    n = np.asarray(sizes, dtype=np.float64)
    if (n <= 0).any():
        raise ValueError(f"every embodiment needs at least one training window, got sizes {list(sizes)}")
    w = n**temperature
    return w / w.sum()


_IMAGE_KEYS = ("frames", "tokens", "latents")


def collate(items: Sequence[Mapping[str, Any]], embodiment_index: Mapping[str, int]) -> dict[str, Any]:
    """Stack window dicts into a model batch.

    Actions are zero-padded to the widest ``step_action_dim`` in the batch; ``embodiment``
    becomes a ``(B,)`` LongTensor of indices into the model config's embodiments.
    """
    key = next((k for k in _IMAGE_KEYS if k in items[0]), None)
    if key is None:
        raise KeyError(f"a window needs one of {_IMAGE_KEYS}, got keys {sorted(items[0])}")
    images = torch.from_numpy(np.stack([np.asarray(it[key]) for it in items]))
    if key == "tokens":
        images = images.long()
    elif key == "latents":
        images = images.float()
    acts = [np.asarray(it["actions"], dtype=np.float32) for it in items]
    width = max(a.shape[-1] for a in acts)
    actions = torch.zeros(len(acts), acts[0].shape[0], width)
    for i, a in enumerate(acts):
        actions[i, :, : a.shape[-1]] = torch.from_numpy(a)
    names = [it["embodiment"] for it in items]
    unknown = sorted(set(names) - set(embodiment_index))
    if unknown:
        raise KeyError(f"windows of embodiments {unknown} that the model does not know: {sorted(embodiment_index)}")
    return {
        key: images,
        "actions": actions,
        "embodiment": torch.tensor([embodiment_index[n] for n in names], dtype=torch.long),
    }


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
        self.probs = mixture_weights(self.sizes, temperature)
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
        embodiment_index: Mapping[str, int],
        start: int,
        stop: int,
    ) -> None:
        super().__init__()
        self.planner, self.sources, self.embodiment_index = planner, sources, embodiment_index
        self.start, self.stop = start, stop

    def batch(self, step: int) -> dict[str, Any]:
        plan = self.planner.plan(step)
        src = self.sources[plan.embodiment]
        out = collate([src[i] for i in plan.indices], self.embodiment_index)
        out["setting"] = plan.setting
        out["step"] = step
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        k, K = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in range(self.start + k, self.stop, K):
            yield self.batch(step)
