"""Held-out evaluation during training: pluggable hooks over fixed held-out batches.

A hook is ``hook(model, batches, ctx) -> {metric name: float}`` where ``batches`` maps an
embodiment name to a list of CPU batches (collated windows from held-out episodes, chosen
once per run so every evaluation sees the same data) and ``ctx`` carries what hooks need
(device transfer, tokenizer, settings, seed). ``EVAL_HOOKS`` is the registry the
``eval.hooks`` config key names; the full evaluation suite lives in ``hma_ros.eval``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hma_ros.train.batches import WindowSource, derive_seed
from hma_ros.train.config import ConfigError, EvalConfig

log = logging.getLogger(__name__)

Batches = Mapping[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class EvalContext:
    settings: tuple[str, ...]  # the settings being trained; the loss hook evaluates each
    tokenizer: nn.Module | None  # decodes predictions for pixel metrics (None: skip them)
    prepare: Callable[[dict[str, Any]], dict[str, Any]]  # CPU batch -> device batch (+ tokens)
    seed: int


def eval_batches(
    sources: Mapping[str, WindowSource], collate: Callable[[list], dict[str, Any]], cfg: EvalConfig, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """``cfg.batches`` batches of ``cfg.batch_size`` windows per embodiment, fixed by ``seed``."""
    out = {}
    for name in sorted(sources):
        src = sources[name]
        n = len(src)
        if n == 0:
            log.warning("no held-out windows for %s: it is not evaluated", name)
            continue
        rng = np.random.default_rng(derive_seed(seed, "eval", name))
        want = cfg.batches * cfg.batch_size
        idx = rng.choice(n, size=want, replace=n < want)
        out[name] = [
            collate([src[int(i)] for i in idx[b * cfg.batch_size : (b + 1) * cfg.batch_size]])
            for b in range(cfg.batches)
        ]
    return out


def held_out_loss(model: nn.Module, batches: Batches, ctx: EvalContext) -> dict[str, float]:
    """Training loss on held-out windows per embodiment and setting (masks seeded per batch)."""
    out: dict[str, float] = {}
    for name, blist in batches.items():
        losses: dict[str, list[float]] = {s: [] for s in ctx.settings}
        for i, b in enumerate(blist):
            prepared = ctx.prepare(b)  # tokenise once for every setting
            for setting in ctx.settings:
                torch.manual_seed(derive_seed(ctx.seed, "eval", name, setting, i))
                loss, _ = model({**prepared, "setting": setting})
                losses[setting].append(float(loss))
        for setting, values in losses.items():
            out[f"loss/{name}/{setting}"] = float(np.mean(values))
        out[f"loss/{name}"] = float(np.mean([out[f"loss/{name}/{s}"] for s in ctx.settings]))
    if batches:
        out["loss"] = float(np.mean([out[f"loss/{n}"] for n in batches]))
    return out


def one_step_psnr(model: nn.Module, batches: Batches, ctx: EvalContext) -> dict[str, float]:
    """PSNR of the frame predicted after ``num_prompt_frames`` true ones (MaskGIT/MAR, 2 steps).

    The context goes through the temporal KV cache (``append_frames``), the next frame is
    decoded by ``predict_next`` with the true action. The target is the true frame when the
    batch holds frames, else the tokenizer's decoding of the true tokens (so the number
    measures the world model, not the tokenizer). Skipped without a tokenizer.
    """
    from hma_ros.tokenizers import psnr_uint8

    if ctx.tokenizer is None:
        return {}
    Tc = model.config.num_prompt_frames
    out: dict[str, float] = {}
    for name, blist in batches.items():
        values = []
        for i, cpu_batch in enumerate(blist):
            b = ctx.prepare(dict(cpu_batch))
            x = b["tokens"] if "tokens" in b else b["latents"]  # (B, T, h, w[, C])
            acts, emb = b["actions"], b["embodiment"]  # (B, T, A), (B,)
            # prev[t]: the action that produced context frame t (frame 0: none).
            prev = torch.cat([torch.full_like(acts[:, :1], float("nan")), acts[:, : Tc - 1]], dim=1)
            cache = model.append_frames(model.init_cache(x.shape[0], x.device), x[:, :Tc], prev, emb)
            gen = torch.Generator(device=x.device).manual_seed(derive_seed(ctx.seed, "psnr", name, i))
            pred, _ = model.predict_next(cache, acts[:, Tc - 1], emb, num_steps=2, generator=gen)
            frames = ctx.tokenizer.decode(pred).cpu()  # (B, H, W, 3) uint8
            target = cpu_batch["frames"][:, Tc] if "frames" in cpu_batch else ctx.tokenizer.decode(x[:, Tc]).cpu()
            values.append(psnr_uint8(frames, target))
        out[f"psnr/{name}"] = float(np.mean(values))
    if out:
        out["psnr"] = float(np.mean(list(out.values())))
    return out


EVAL_HOOKS: dict[str, Callable[[nn.Module, Batches, EvalContext], dict[str, float]]] = {
    "loss": held_out_loss,
    "psnr": one_step_psnr,
}


def build_eval_hooks(names: tuple[str, ...]) -> dict[str, Callable]:
    unknown = [n for n in names if n not in EVAL_HOOKS]
    if unknown:
        raise ConfigError(f"eval.hooks: unknown hook {unknown[0]!r}; known: {sorted(EVAL_HOOKS)}")
    return {n: EVAL_HOOKS[n] for n in names}
