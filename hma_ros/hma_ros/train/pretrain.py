"""Pre-train HMA on a mixture of embodiments.

    python -m hma_ros.train.pretrain --config hma_ros/config/train/pretrain_small.yaml \\
        [optim.lr=1e-4 steps=2000 ...]
    torchrun --nproc_per_node=2 -m hma_ros.train.pretrain --config ...

The model config is the preset (``model.preset``) with the token grid of the run's
tokenizer, the embodiments (with their action statistics) of the datasets, and
``model.overrides``. Re-running the same command resumes from the newest checkpoint.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch

from hma_ros.data.format import EmbodimentDataset
from hma_ros.model.config import HMAConfig
from hma_ros.train.batches import derive_seed
from hma_ros.train.cli import base_parser, run
from hma_ros.train.config import ConfigError, TrainConfig
from hma_ros.train.data import (
    EmbodimentData,
    load_run_tokenizer,
    open_training_data,
    resolve_dataset,
    token_fields,
)
from hma_ros.train.distributed import DistInfo
from hma_ros.train.trainer import Trainer

log = logging.getLogger(__name__)


def check_images(data: dict[str, EmbodimentData], tokenizer) -> None:
    """Datasets read as frames must have the tokenizer's image size."""
    for name, d in data.items():
        if d.image_key == "frames" and tuple(d.image_size) != tuple(tokenizer.image_size):
            raise ConfigError(
                f"data.tokenizer: {name} frames are {d.image_size}, the tokenizer takes {tokenizer.image_size}; "
                "re-import the dataset at the tokenizer's size or tokenise it first"
            )


def model_config(cfg: TrainConfig, specs: list, tokenizer) -> HMAConfig:
    from hma_ros.model.presets import PRESETS, make_config

    if cfg.model.preset not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {cfg.model.preset!r}; known: {sorted(PRESETS)}")
    fields = token_fields(tokenizer)
    for k, v in cfg.model.overrides.items():
        if k in fields and v != fields[k] and not (isinstance(v, list) and tuple(v) == fields[k]):
            raise ConfigError(f"model.overrides.{k}: {v!r} contradicts the tokenizer, which gives {fields[k]!r}")
    try:
        return make_config(cfg.model.preset, specs, **{**fields, **cfg.model.overrides})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.overrides: {e}") from None


def run_info(cfg: TrainConfig, tokenizer) -> dict[str, Any]:
    return {"kind": "pretrain", "tokenizer": {"folder": cfg.data.tokenizer, "id": tokenizer.tokenizer_id}}


def build_pretraining(cfg: TrainConfig, dist: DistInfo) -> Trainer:
    from hma_ros.model.hma import HMA

    if cfg.posttrain.init is not None:
        raise ConfigError("posttrain.init: set in a pre-training run; use python -m hma_ros.train.posttrain")
    if not cfg.data.embodiments:
        raise ConfigError("data.embodiments: at least one embodiment (name or dataset folder) is required")
    tokenizer = load_run_tokenizer(cfg.data)
    folders = [resolve_dataset(e, cfg.data.roots) for e in cfg.data.embodiments]
    specs = [EmbodimentDataset.open(f, check_values=False).spec for f in folders]
    config = model_config(cfg, specs, tokenizer)
    data = open_training_data(cfg.data, config.max_frames, tokenizer.tokenizer_id)
    check_images(data, tokenizer)
    torch.manual_seed(derive_seed(cfg.seed, "init"))  # the same initial weights on every rank
    model = HMA(config)
    n = sum(p.numel() for p in model.parameters())
    if dist.is_main:
        log.info("HMA %s: %.2fM parameters, embodiments %s", cfg.model.preset, n / 1e6, list(config.embodiment_names))
    return Trainer(
        cfg,
        model,
        {k: d.train for k, d in data.items()},
        eval_sources={k: d.eval for k, d in data.items() if d.eval is not None},
        dist=dist,
        tokenizer=tokenizer,
        run_info=run_info(cfg, tokenizer),
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = base_parser("python -m hma_ros.train.pretrain", __doc__.split("\n")[0])
    args = parser.parse_args(argv)
    return run(args, args.overrides, build_pretraining)


if __name__ == "__main__":
    main(sys.argv[1:])
