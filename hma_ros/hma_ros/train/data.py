"""From the ``data`` section of a training config to training and held-out windows.

Each embodiment's dataset (``hma_ros.data``) is split by episode: the last
``eval_episodes`` episode ids are held out for evaluation, the rest train. Windows come as
token ids / latents when the dataset was tokenised with the run's tokenizer (its id is
recorded in the dataset's metadata), else as frames that the trainer tokenises on the fly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hma_ros.data.format import METADATA, EmbodimentDataset, find_datasets
from hma_ros.data.windows import WindowDataset
from hma_ros.model.config import EmbodimentSpec
from hma_ros.train.config import ConfigError, DataConfig

log = logging.getLogger(__name__)


class WindowSubset:
    """The windows of a :class:`WindowDataset` that start in the given episodes."""

    def __init__(self, windows: WindowDataset, episodes: np.ndarray) -> None:
        self.windows = windows
        window_episode = np.asarray(windows.data.episode[windows.starts])  # (num_windows,)
        self.indices = np.flatnonzero(np.isin(window_episode, episodes))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.windows[int(self.indices[i])]


@dataclass(frozen=True)
class EmbodimentData:
    spec: EmbodimentSpec  # with the dataset's action statistics
    folder: Path
    train: WindowSubset
    eval: WindowSubset | None
    image_key: str  # "tokens" | "latents" | "frames"
    image_size: tuple[int, int]


def resolve_dataset(entry: str, roots: Sequence[str]) -> Path:
    """An embodiment name (looked up under ``roots``, first match wins) or a dataset folder."""
    path = Path(entry)
    if (path / METADATA).is_file():
        return path
    for root in roots:
        found = find_datasets(root) if Path(root).is_dir() else {}
        if entry in found:
            return found[entry]
    raise ConfigError(
        f"data.embodiments: no dataset {entry!r}: not a dataset folder and not found under data.roots={list(roots)}"
    )


def open_embodiment(
    folder: str | os.PathLike, num_frames: int, tokenizer_id: str | None, eval_episodes: int
) -> EmbodimentData:
    """Open one dataset folder, split its episodes, choose tokens or frames."""
    ds = EmbodimentDataset.open(folder)
    use_id = tokenizer_id if tokenizer_id is not None and tokenizer_id in ds.tokenizers else None
    if tokenizer_id is not None and use_id is None:
        log.info("%s: not tokenised with %s; tokenising frames on the fly", folder, tokenizer_id)
    windows = WindowDataset(ds, num_frames, tokenizer_id=use_id)
    n_ep = ds.num_episodes
    if eval_episodes and n_ep <= eval_episodes:
        raise ConfigError(
            f"data.eval_episodes: {folder} has {n_ep} episodes, cannot hold out {eval_episodes} and train on the rest"
        )
    episodes = np.arange(n_ep)
    train = WindowSubset(windows, episodes[: n_ep - eval_episodes])
    held = WindowSubset(windows, episodes[n_ep - eval_episodes :]) if eval_episodes else None
    if len(train) == 0:
        raise ConfigError(
            f"data: {folder} has no training window of {num_frames} steps "
            f"({num_frames * ds.spec.stride} action rows); episodes are {ds.episode_lengths}"
        )
    key = "frames"
    if use_id is not None:
        key = "tokens" if ds.tokenizers[use_id]["kind"] == "discrete" else "latents"
    return EmbodimentData(ds.spec, Path(folder), train, held, key, tuple(ds.image_size))


def open_training_data(
    cfg: DataConfig, num_frames: int, tokenizer_id: str | None, extra: Sequence[str] = ()
) -> dict[str, EmbodimentData]:
    """Every embodiment of ``cfg.embodiments`` (+ ``extra``), keyed by embodiment name."""
    entries = [*cfg.embodiments, *extra]
    if not entries:
        raise ConfigError("data.embodiments: at least one embodiment (name or dataset folder) is required")
    out: dict[str, EmbodimentData] = {}
    for entry in entries:
        data = open_embodiment(resolve_dataset(entry, cfg.roots), num_frames, tokenizer_id, cfg.eval_episodes)
        if data.spec.name in out:
            raise ConfigError(f"data.embodiments: {data.spec.name!r} listed twice")
        out[data.spec.name] = data
        log.info(
            "%s: %d training windows, %d held-out (%s) from %s",
            data.spec.name,
            len(data.train),
            len(data.eval) if data.eval is not None else 0,
            data.image_key,
            data.folder,
        )
    return out


def load_run_tokenizer(cfg: DataConfig, device: Any = "cpu"):
    """The run's tokenizer (``data.tokenizer``), required: it fixes the model's token grid."""
    from hma_ros.tokenizers import load_tokenizer

    if cfg.tokenizer is None:
        raise ConfigError("data.tokenizer: a tokenizer folder is required (it defines the model's tokens)")
    return load_tokenizer(cfg.tokenizer, device=device)


def token_fields(tokenizer) -> dict[str, Any]:
    """The HMAConfig fields a tokenizer determines."""
    h, w = tokenizer.grid
    fields: dict[str, Any] = {"variant": tokenizer.kind, "tokens_h": h, "tokens_w": w}
    if tokenizer.kind == "discrete":
        fields["vocab_factors"] = tuple(tokenizer.vocab_factors)
    else:
        fields["token_dim"] = tokenizer.token_dim
    return fields
