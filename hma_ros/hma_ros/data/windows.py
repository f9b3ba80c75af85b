"""2 Hz training windows, the temperature-weighted mixture over embodiments, and its collate.

A window is ``T`` model steps of one episode. Step ``t`` starts at action row
``r + t * stride`` (stride = control_hz / 2): its frame is the one observed before that row
and its action is the ``stride`` raw actions from that row on, concatenated oldest first,
``(stride * action_dim,)``. Windows never cross an episode boundary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from hma_ros.data.format import DatasetError, EmbodimentDataset
from hma_ros.model.config import EmbodimentSpec, HMAConfig


class WindowDataset(Dataset):
    """Windows of ``num_frames`` 2 Hz steps over one embodiment's dataset.

    Args:
        folder: a dataset folder (or an open :class:`EmbodimentDataset`).
        num_frames: ``T``, model steps per window (paper: 12).
        tokenizer_id: return ``tokens`` (discrete) or ``latents`` (continuous) stored under this
            tokenizer id instead of ``frames``.
        window_step: action rows between consecutive window starts; default ``frame_every``
            (every row that has a frame; sub-stride offsets act as augmentation).

    Items: ``frames`` (T, H, W, 3) uint8 | ``tokens`` (T, h, w) int64 | ``latents``
    (T, h, w, C) float32; ``actions`` (T, stride * action_dim) float32 raw; ``embodiment``
    (name); ``episode`` and ``start_row`` (ints, for debugging and evaluation).
    """

    def __init__(
        self,
        folder: str | os.PathLike | EmbodimentDataset,
        num_frames: int,
        tokenizer_id: str | None = None,
        window_step: int | None = None,
    ):
        self.data = folder if isinstance(folder, EmbodimentDataset) else EmbodimentDataset.open(folder)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = int(num_frames)
        self.spec: EmbodimentSpec = self.data.spec
        self.stride = self.spec.stride
        fe = self.data.frame_every
        step = fe if window_step is None else int(window_step)
        if step < 1 or step % fe:
            raise ValueError(f"window_step must be a positive multiple of frame_every={fe}, got {window_step}")
        self.tokenizer_id = tokenizer_id
        self._images = self.data.frames if tokenizer_id is None else self.data.tokens(tokenizer_id)
        self._image_key = "frames"
        if tokenizer_id is not None:
            kind = self.data.tokenizers[tokenizer_id]["kind"]
            self._image_key = "tokens" if kind == "discrete" else "latents"
        span = self.num_frames * self.stride  # action rows one window covers
        starts = [
            np.arange(s, s + n - span + 1, step, dtype=np.int64)
            for s, n in zip(self.data.episode_starts, self.data.episode_lengths, strict=True)
            if n >= span
        ]
        self.starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def name(self) -> str:
        return self.spec.name

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        r = int(self.starts[i])
        T, s, fe = self.num_frames, self.stride, self.data.frame_every
        frame_idx = (r + np.arange(T) * s) // fe
        images = np.asarray(self._images[frame_idx])
        actions = np.asarray(self.data.actions[r : r + T * s]).reshape(T, s * self.spec.action_dim)
        if self._image_key == "tokens":
            images_t = torch.from_numpy(images.astype(np.int64))
        else:
            images_t = torch.from_numpy(np.array(images))
        return {
            self._image_key: images_t,
            "actions": torch.from_numpy(np.array(actions, np.float32)),
            "embodiment": self.spec.name,
            "episode": int(self.data.episode[r]),
            "start_row": r,
        }


def temperature_weights(sizes: Sequence[int], exponent: float = 1.0 / 3.0) -> np.ndarray:
    """Sampling probability per dataset, proportional to ``size ** exponent`` (paper: 1/3)."""
    n = np.asarray(sizes, np.float64)
    if (n < 0).any():
        raise ValueError(f"sizes must be >= 0, got {list(sizes)}")
    w = np.where(n > 0, n**exponent, 0.0)
    if w.sum() == 0:
        raise ValueError("every dataset is empty")
    return w / w.sum()


class MixtureDataset(Dataset):
    """The concatenation of several :class:`WindowDataset`; global index = offset + local."""

    def __init__(self, datasets: Sequence[WindowDataset]):
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"embodiment names must be unique, got {names}")
        self.datasets = list(datasets)
        self.sizes = [len(d) for d in datasets]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    @classmethod
    def from_root(
        cls, root: str | os.PathLike, num_frames: int, embodiments: Sequence[str] | None = None, **kw: Any
    ) -> MixtureDataset:
        """Every dataset folder under ``root`` (or only ``embodiments``, in that order)."""
        from hma_ros.data.format import find_datasets

        found = find_datasets(root)
        names = list(embodiments) if embodiments is not None else sorted(found)
        missing = [n for n in names if n not in found]
        if missing:
            raise DatasetError(f"{root}: no dataset for {missing}; found {sorted(found)}")
        return cls([WindowDataset(found[n], num_frames, **kw) for n in names])

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.datasets[k][int(i - self.offsets[k])]


class MixtureSampler(Sampler[list[int]]):
    """Batches of global indices into a :class:`MixtureDataset`, temperature-weighted.

    Each batch draws one embodiment with probability ~ n^exponent (n = its window count;
    paper: one embodiment per batch, exponent 1/3) and ``batch_size`` windows of it uniformly.
    With ``mixed=True`` every sample draws its own embodiment. Seeded: batches depend only on
    ``(seed, epoch)``; call :meth:`set_epoch` each epoch. Under DDP pass ``rank`` and
    ``world_size``: every rank draws the same stream and keeps every ``world_size``-th batch.
    """

    def __init__(
        self,
        mixture: MixtureDataset,
        batch_size: int,
        num_batches: int | None = None,
        exponent: float = 1.0 / 3.0,
        mixed: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.mixture = mixture
        self.batch_size = int(batch_size)
        self.weights = temperature_weights(mixture.sizes, exponent)
        self.num_batches = int(num_batches) if num_batches is not None else max(1, len(mixture) // batch_size)
        self.mixed = mixed
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.num_batches, self.world_size))

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        off, sizes = self.mixture.offsets, self.mixture.sizes
        for b in range(self.num_batches):
            if self.mixed:
                ks = rng.choice(len(sizes), size=self.batch_size, p=self.weights)
            else:
                ks = np.full(self.batch_size, rng.choice(len(sizes), p=self.weights))
            local = rng.random(self.batch_size)
            batch = [int(off[k] + int(u * sizes[k])) for k, u in zip(ks, local, strict=True)]
            if b % self.world_size == self.rank:
                yield batch


class MixtureCollate:
    """Stack window dicts into a model batch for ``config``'s embodiment order.

    ``actions`` are zero-padded to the batch's widest ``step_action_dim`` (or to the widest
    embodiment of the config with ``pad_to_config``, for shapes that never change);
    ``embodiment`` is a (B,) LongTensor of indices into ``config.embodiments``.
    """

    def __init__(self, config: HMAConfig, pad_to_config: bool = False):
        self.config = config
        self.pad_to_config = pad_to_config

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("empty batch")
        emb = []
        for s in samples:
            spec = self.config.embodiment(s["embodiment"])
            if s["actions"].shape[-1] != spec.step_action_dim:
                raise ValueError(
                    f"embodiment {spec.name!r}: window actions have {s['actions'].shape[-1]} numbers per step, "
                    f"the config expects {spec.step_action_dim} (action_dim {spec.action_dim} x stride "
                    f"{spec.stride}); was the dataset recorded at another rate?"
                )
            emb.append(self.config.embodiment_index(s["embodiment"]))
        width = (
            max(e.step_action_dim for e in self.config.embodiments)
            if self.pad_to_config
            else max(s["actions"].shape[-1] for s in samples)
        )
        T = samples[0]["actions"].shape[0]
        actions = torch.zeros(len(samples), T, width)
        for i, s in enumerate(samples):
            actions[i, :, : s["actions"].shape[-1]] = s["actions"]
        out: dict[str, torch.Tensor] = {"actions": actions, "embodiment": torch.tensor(emb, dtype=torch.long)}
        for key in ("frames", "tokens", "latents"):
            if key in samples[0]:
                out[key] = torch.stack([s[key] for s in samples])
        return out


def dataset_specs(root: str | os.PathLike, embodiments: Sequence[str] | None = None) -> list[EmbodimentSpec]:
    """The embodiment specs (with data statistics) of the datasets under ``root``."""
    from hma_ros.data.format import find_datasets

    found = find_datasets(Path(root))
    names = list(embodiments) if embodiments is not None else sorted(found)
    return [EmbodimentDataset.open(found[n], check_values=False).spec for n in names]
