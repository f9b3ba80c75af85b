"""The training loop shared by pre-training and post-training.

``Trainer(config, model, sources, ...).fit()`` runs ``config.steps`` optimiser steps:
deterministic batches (``batches.py``), AdamW with warmup + cosine, gradient clipping,
DDP under torchrun, TensorBoard scalars and a tqdm bar on rank 0, held-out evaluation
hooks, and atomic checkpoints that a crashed run resumes from bit for bit.

Reproducibility: before each step every process seeds torch from ``(seed, step, rank)``,
so masks, diffusion noise and dropout of step ``s`` do not depend on what ran before —
a resumed run needs no saved RNG state. Data order is a function of ``(seed, step)`` too.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from hma_ros.data.windows import MixtureCollate
from hma_ros.train import checkpoint as ckpt
from hma_ros.train.batches import BatchPlanner, StepBatches, WindowSource, derive_seed
from hma_ros.train.config import TrainConfig, save_train_config
from hma_ros.train.distributed import DistInfo, all_reduce_mean, barrier
from hma_ros.train.evaluation import EvalContext, build_eval_hooks, eval_batches
from hma_ros.train.optim import build_optimizer, lr_at
from hma_ros.train.params import embodiment_parameters

log = logging.getLogger(__name__)


def _scalar(v: Any) -> float | None:
    if isinstance(v, torch.Tensor):
        return float(v.detach()) if v.numel() == 1 else None
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return None


class Trainer:
    """One training run on one process (``torchrun`` starts one per device).

    Args:
        config: the run.
        model: an ``HMA`` (or anything with ``config.embodiments`` and
            ``forward(batch) -> (loss, metrics)``), already initialised; parameters with
            ``requires_grad=False`` are not trained.
        sources: training windows per embodiment name.
        eval_sources: held-out windows per embodiment name (may be empty).
        dist: this process's place in the process group.
        tokenizer: encodes ``frames`` batches on the fly (``None`` for pre-tokenised data).
        run_info: extra JSON saved in every ``trainer.json`` (e.g. the post-training source).
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        sources: Mapping[str, WindowSource],
        *,
        eval_sources: Mapping[str, WindowSource] | None = None,
        dist: DistInfo | None = None,
        tokenizer: nn.Module | None = None,
        run_info: dict[str, Any] | None = None,
        eval_hooks: Mapping[str, Callable] | None = None,
    ) -> None:
        self.config = config
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.model = model.to(self.device)
        self.sources = dict(sources)
        self.eval_sources = dict(eval_sources or {})
        self.tokenizer = tokenizer.to(self.device).eval() if tokenizer is not None else None
        self.run_info = dict(run_info or {})
        names = tuple(e.name for e in model.config.embodiments)
        missing = sorted(set(self.sources) - set(names))
        if missing:
            raise ValueError(f"training data for embodiments {missing} that the model does not know: {names}")
        # Pad actions to the widest embodiment of the model: constant shapes, and HMA's
        # forward runs every stem on the batch's actions (it fails on narrower ones).
        self.collate = MixtureCollate(model.config, pad_to_config=True)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.embodiment_params = embodiment_parameters(self.model)
        self.eval_hooks = dict(eval_hooks) if eval_hooks is not None else build_eval_hooks(config.eval.hooks)
        self.out_dir = Path(config.out_dir)
        self.step = 0

    # ---- resume -------------------------------------------------------------------------------
    def resume(self, folder: str | Path | None = None) -> int:
        """Load a checkpoint (default: the newest in ``out_dir``); return its step (0: none)."""
        if self.dist.is_main:
            ckpt.remove_stale_staging(self.out_dir)
        barrier(self.dist)
        folder = Path(folder) if folder is not None else ckpt.latest_checkpoint(self.out_dir)
        if folder is None:
            return 0
        info = ckpt.load_training_checkpoint(folder, self.model, self.optimizer)
        if info.get("world_size", self.dist.world_size) != self.dist.world_size:
            log.warning(
                "resuming a %s-process run with %s processes: data is the same, masks and noise are not",
                info.get("world_size"),
                self.dist.world_size,
            )
        self.step = int(info["step"])
        if self.dist.is_main:
            log.info("resumed from %s at step %d", folder, self.step)
        return self.step

    # ---- the loop -------------------------------------------------------------------------------
    def _loader(self) -> DataLoader | StepBatches:
        cfg = self.config
        planner = BatchPlanner(
            {n: len(s) for n, s in self.sources.items()},
            cfg.settings_probs,
            batch_size=cfg.data.batch_size,
            seed=cfg.seed,
            temperature=cfg.data.temperature,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        if self.dist.is_main:
            probs = dict(zip(planner.names, planner.probs.round(3).tolist(), strict=True))
            log.info("mixture weights (n^%.3f): %s", cfg.data.temperature, probs)
        batches = StepBatches(planner, self.sources, self.collate, self.step, cfg.steps)
        if cfg.data.num_workers == 0:
            return batches
        return DataLoader(
            batches,
            batch_size=None,
            num_workers=cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=2,
        )

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if "frames" in out and self.tokenizer is not None:
            frames = out.pop("frames")
            key = "tokens" if self.tokenizer.kind == "discrete" else "latents"
            out[key] = self.tokenizer.encode(frames)
        return out

    def fit(self) -> dict[str, float]:
        """Train from ``self.step`` to ``config.steps``; return the last logged metrics."""
        cfg = self.config
        main = self.dist.is_main
        writer = None
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_train_config(cfg, self.out_dir / "train_config.yaml")
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.step)
        net: nn.Module = self.model
        if self.dist.enabled:
            # find_unused_parameters: a batch uses one embodiment's stem/head/modulation only.
            net = DistributedDataParallel(
                self.model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        evaluate = self._make_eval()
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, float] = defaultdict(float)
        last: dict[str, float] = {}
        t_last, steps_since, paused = time.perf_counter(), 0, 0.0
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not main, desc="train", dynamic_ncols=True)
        try:
            self.model.train()
            for batch in self._loader():
                step = batch.pop("step")
                assert step == self.step, f"data for step {step} arrived at step {self.step}"
                loss, gnorm, metrics, emb, lr = self._train_step(net, batch, step, trainable)
                self.step = step + 1
                steps_since += 1
                # Running sums between log points; keys are the same on every rank (same schedule).
                for key, v in (("loss", loss), (f"loss/{emb}", loss), ("grad_norm", gnorm)):
                    sums[key] += float(v.detach())
                    counts[key] += 1
                for k, v in metrics.items():
                    s = _scalar(v)
                    if s is not None:
                        sums[f"metrics/{k}"] += s
                        counts[f"metrics/{k}"] += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    means = all_reduce_mean({k: sums[k] / counts[k] for k in sorted(sums)}, self.dist)
                    elapsed = time.perf_counter() - t_last - paused  # evaluation and saving excluded
                    means["lr"] = lr
                    means["throughput/steps_per_s"] = steps_since / elapsed
                    means["throughput/samples_per_s"] = steps_since * cfg.data.batch_size / elapsed
                    if writer is not None:
                        for k, v in means.items():
                            writer.add_scalar(f"train/{k}", v, self.step)
                    bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}")
                    last = means
                    sums.clear()
                    counts.clear()
                    t_last, steps_since, paused = time.perf_counter(), 0, 0.0
                at_end = self.step == cfg.steps
                t_pause = time.perf_counter()
                if cfg.eval.every and (self.step % cfg.eval.every == 0 or at_end):
                    results = evaluate()
                    if main:
                        for k, v in results.items():
                            if writer is not None:
                                writer.add_scalar(f"eval/{k}", v, self.step)
                        log.info("step %d eval: %s", self.step, {k: round(v, 4) for k, v in results.items()})
                        last.update({f"eval/{k}": v for k, v in results.items()})
                if (cfg.checkpoint.every and self.step % cfg.checkpoint.every == 0) or at_end:
                    self.save()
                paused += time.perf_counter() - t_pause
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        return last

    def _train_step(self, net: nn.Module, batch: dict[str, Any], step: int, trainable: list) -> tuple:
        """One optimiser update; returns (loss, grad norm, model metrics, embodiment, lr)."""
        cfg = self.config
        torch.manual_seed(derive_seed(cfg.seed, "step", step, self.dist.rank))
        emb = self.config_embodiment_name(int(batch["embodiment"][0]))
        batch = self._to_device(batch)
        lr = lr_at(step, cfg.steps, cfg.optim)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss, metrics = net(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {step} (embodiment {emb})")
        loss.backward()
        # An embodiment's modules update only on its own batches. HMA runs every stem on
        # every sample, so absent embodiments get zero gradients, and AdamW would still move
        # them (weight decay, momentum); a None gradient makes AdamW skip them. The batch's
        # embodiments are the same on every rank, so ranks stay identical.
        present = {self.config_embodiment_name(i) for i in batch["embodiment"].unique().tolist()}
        for name, params in self.embodiment_params.items():
            if name not in present:
                for p in params:
                    p.grad = None
        clip = cfg.optim.grad_clip
        gnorm = torch.nn.utils.clip_grad_norm_(trainable, clip) if clip > 0 else torch.zeros(())
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), gnorm, metrics, emb, lr

    def config_embodiment_name(self, index: int) -> str:
        return self.model.config.embodiments[index].name

    # ---- checkpoints and evaluation ---------------------------------------------------------------
    def save(self) -> Path | None:
        """Rank 0 writes ``checkpoints/step_XXXXXXXX``; every rank waits for it."""
        path = None
        if self.dist.is_main:
            info = {
                "seed": self.config.seed,
                "world_size": self.dist.world_size,
                "rng": "torch seeded per step from (seed, 'step', step, rank); data from (seed, 'batch', step)",
                "train_config": self.config.to_dict(),
                **self.run_info,
            }
            path = ckpt.save_training_checkpoint(
                self.out_dir,
                self.step,
                self.model,
                self.optimizer,
                info,
                keep_last=self.config.checkpoint.keep_last,
                model_extra={"step": self.step, **self.run_info},
            )
        barrier(self.dist)
        return path

    def _make_eval(self) -> Callable[[], dict[str, float]]:
        cfg = self.config
        fixed = eval_batches(self.eval_sources, self.collate, cfg.eval, seed=cfg.seed)
        ctx = EvalContext(
            settings=tuple(cfg.settings_probs),
            tokenizer=self.tokenizer,
            prepare=self._to_device,
            seed=cfg.seed,
        )

        def run() -> dict[str, float]:
            results: dict[str, float] = {}
            if self.dist.is_main and fixed:
                self.model.eval()
                with torch.no_grad():
                    for name, hook in self.eval_hooks.items():
                        out = hook(self.model, fixed, ctx)
                        results.update(out)
                        if not out:
                            log.debug("eval hook %s returned nothing", name)
                self.model.train()
            barrier(self.dist)
            return {k: v for k, v in results.items() if math.isfinite(v)}

        return run
