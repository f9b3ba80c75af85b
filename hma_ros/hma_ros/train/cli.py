"""What the ``pretrain`` and ``posttrain`` commands share: arguments, logging, the run."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable

from hma_ros.train.checkpoint import CheckpointError
from hma_ros.train.config import ConfigError, TrainConfig, load_train_config
from hma_ros.train.distributed import DistInfo, init_distributed, shutdown_distributed
from hma_ros.train.trainer import Trainer

log = logging.getLogger(__name__)


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--config", help="training config YAML (hma_ros/config/train/*.yaml)")
    p.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="resume from this checkpoint folder (default: the newest under out_dir, if any)",
    )
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if out_dir has checkpoints")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. optim.lr=1e-4")
    return p


def setup_logging(rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"%(asctime)s [rank {rank}] %(name)s %(levelname)s: %(message)s")


def run(
    args: argparse.Namespace,
    overrides: list[str],
    build: Callable[[TrainConfig, DistInfo], Trainer],
) -> dict[str, float]:
    """Load the config, join the process group, build the trainer, resume, train."""
    rank = int(os.environ.get("RANK", "0"))
    setup_logging(rank)
    try:
        cfg = load_train_config(args.config, overrides)
    except (ConfigError, OSError) as e:
        raise SystemExit(f"config error: {e}") from None
    dist = init_distributed(cfg.device)
    try:
        try:
            trainer = build(cfg, dist)
        except ConfigError as e:
            raise SystemExit(f"config error: {e}") from None
        if not args.no_resume:
            try:
                trainer.resume(args.resume)
            except CheckpointError as e:
                raise SystemExit(f"cannot resume: {e}") from None
        if trainer.step >= cfg.steps:
            log.info("nothing to do: the checkpoint is at step %d of %d", trainer.step, cfg.steps)
            return {}
        return trainer.fit()
    finally:
        shutdown_distributed()
