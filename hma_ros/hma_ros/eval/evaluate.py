"""Evaluate a checkpoint on held-out episodes: every metric of issue #5 against the baselines.

For every window of ``context + horizon`` 2 Hz steps in the chosen episodes, the model sees the
first ``context`` frames (tokenised) and rolls out ``horizon`` frames with the true actions;
predictions are decoded and compared with the real frames. Baselines: copy-the-last-frame repeats
the last real context frame; the passive model is the same checkpoint with every action unknown
(NaN: the paper's action-free video setting, which it is trained on), so the gap to it is what
the actions buy; ``--baseline NAME=CKPT`` adds other checkpoints (e.g. trained from scratch).

- Fidelity: PSNR, SSIM and LPIPS per step ahead; FID over the predicted frames and FVD over
  context + prediction videos (both against the recorded windows; the tokenizer's own
  reconstruction is listed as the floor); perplexity (discrete variant) of the true next frame,
  teacher-forced (:mod:`hma_ros.eval.likelihood`).
- Controllability: dPSNR (arXiv 2502.04296, §4; IRASim): PSNR of the last predicted frame with
  the true actions minus its PSNR with random actions drawn N(0, 1) in the normalised action
  space, averaged over ``trials`` draws. On simulated datasets also PSNR* and perplexity*: the
  future actions are perturbed, the episode re-simulated under them (:mod:`hma_ros.eval.resim`),
  and the model's rollout under the same perturbed actions scored against what the simulator
  shows, beside its rollout under the recorded actions (what ignoring the change would score).
- Long-horizon stability (``--long-data``): PSNR/SSIM per step of 100+ frame open-loop rollouts.
- Speed: generated frames/s of the evaluated configuration.

    python -m hma_ros.eval.evaluate CKPT --data DATASET_FOLDER [--episodes last:4] \
        [--context 4] [--horizon 8] [--trials 5] [--out out/eval.json] [--report out/eval_report] \
        [--long-data LONG_DATASET_FOLDER --long-horizon 100] [--no-frechet] [--no-resim]

``--report DIR`` also writes a Markdown report with curves, image strips and videos of a few
windows (:mod:`hma_ros.eval.report`).

Seeded: reruns give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hma_ros.data.format import EmbodimentDataset
from hma_ros.data.windows import WindowDataset
from hma_ros.eval.likelihood import next_frame_nll
from hma_ros.eval.metrics import (
    FeatureStats,
    FIDCalculator,
    FVDCalculator,
    frechet_distance,
    lpips,
    psnr,
    sample_normalized_random_actions,
    ssim,
)
from hma_ros.eval.nets.i3d import MIN_FRAMES as I3D_MIN_FRAMES
from hma_ros.eval.resim import Resimulator, perturb_step_actions, resim_unavailable
from hma_ros.model.checkpoint import load_model
from hma_ros.runtime.runner import load_checkpoint_tokenizer

log = logging.getLogger(__name__)


def select_episodes(spec: str, num_episodes: int) -> list[int]:
    """``"last:K"``, ``"first:K"``, ``"all"`` or a comma list ``"3,7,9"`` -> episode indices."""
    if spec == "all":
        return list(range(num_episodes))
    kind, _, k = spec.partition(":")
    if kind in ("last", "first") and k.isdigit() and int(k) > 0:
        k = min(int(k), num_episodes)
        return list(range(num_episodes - k, num_episodes)) if kind == "last" else list(range(k))
    try:
        eps = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ValueError(f"episodes must be 'all', 'last:K', 'first:K' or a comma list, got {spec!r}") from None
    bad = [e for e in eps if not 0 <= e < num_episodes]
    if bad:
        raise ValueError(f"episodes {bad} out of range: the dataset has {num_episodes}")
    return eps


class FrechetSets:
    """FID over single frames and FVD over context + predicted videos, for every candidate
    against the recorded windows, accumulated window by window (features only, not frames).
    FVD is skipped (with the reason) when a window is shorter than I3D's minimum."""

    def __init__(self, video_frames: int):
        self.fid = FIDCalculator()
        self.fvd = FVDCalculator(batch_size=8) if video_frames >= I3D_MIN_FRAMES else None
        self.fvd_skipped = (
            None
            if self.fvd
            else f"windows of {video_frames} frames; I3D needs at least {I3D_MIN_FRAMES} (raise --context/--horizon)"
        )
        self.stats: dict[str, dict[str, FeatureStats]] = {"fid": {}, "fvd": {}}

    def add(self, key: str, frames: torch.Tensor, context: torch.Tensor) -> None:
        """frames (horizon, H, W, 3) of candidate ``key`` ("truth" = the real set); context the
        window's real context frames, which lead each video."""
        self._stats("fid", key, FIDCalculator.dim).add(self.fid.features(frames))
        if self.fvd is not None:
            video = torch.cat([context, frames])[None]  # (1, T, H, W, 3)
            self._stats("fvd", key, FVDCalculator.dim).add(self.fvd.features(video))

    def _stats(self, kind: str, key: str, dim: int) -> FeatureStats:
        return self.stats[kind].setdefault(key, FeatureStats(dim))

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, sets in self.stats.items():
            if kind == "fvd" and self.fvd is None:
                out[kind] = {"skipped": self.fvd_skipped}
                continue
            if sets["truth"].n < 2:
                out[kind] = {"skipped": f"{sets['truth'].n} sample(s); a covariance needs 2 (evaluate more windows)"}
                continue
            real = sets["truth"].mean_cov()
            scores = {k: frechet_distance(*real, *v.mean_cov()) for k, v in sets.items() if k != "truth"}
            out[kind] = {"scores": scores, "samples": sets["truth"].n}
        if "scores" in out["fvd"]:
            out["fvd"]["frames"] = self.fvd.frames
        return out


@torch.no_grad()
def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    episodes: str = "last:4",
    context: int = 4,
    horizon: int = 8,
    trials: int = 5,
    num_steps: int = 2,
    temperature: float = 1.0,
    window_step: int | None = None,
    max_windows: int | None = None,
    seed: int = 0,
    progress: bool = True,
    examples: list[dict[str, Any]] | None = None,
    num_examples: int = 4,
    baselines: dict[str, str | Path] | None = None,
    frechet: bool = True,
    resim: bool | None = None,
    resim_sigma: float = 0.5,
    resim_windows: int | None = None,
) -> dict[str, Any]:
    """The numbers as a JSON-ready dict. If ``examples`` is a list, up to ``num_examples``
    windows spread over the evaluated ones are appended to it: ``window``, ``episode`` and
    uint8 ``truth``, ``pred`` (true actions) and ``random`` (first random-action trial)
    frames ``(horizon, H, W, 3)``, for :func:`hma_ros.eval.report.write_report`.

    ``baselines`` maps names to other checkpoints (e.g. the same recipe trained from scratch,
    the paper's HMA vs HMA+): each rolls out the same windows under the true actions, with
    its own generator seeded ``seed``, and appears in the per-step metrics under its name.
    They must share the checkpoint's tokenizer, so the frames compared are decoded alike.

    ``frechet``: FID (every predicted frame) and FVD (context + prediction videos) of the
    model and each baseline against the recorded windows. Perplexity (discrete variant) is
    the teacher-forced next-frame one of :mod:`hma_ros.eval.likelihood`. ``resim``: PSNR*
    and perplexity* on up to ``resim_windows`` windows: the future actions are shifted by
    ``resim_sigma`` action stds per 2 Hz step (:func:`~hma_ros.eval.resim.perturb_step_actions`),
    the episode is re-simulated under them, and the model's rollout under the same perturbed
    actions is scored against what the simulator shows; None = whenever the dataset was
    written by the simulator, True = required (an error says why not), False = never."""
    checkpoint = Path(checkpoint)
    model = load_model(checkpoint)
    tokenizer = load_checkpoint_tokenizer(checkpoint)
    others = {}
    for label, folder in (baselines or {}).items():
        if label in LABELS:
            raise ValueError(f"baseline name {label!r} is taken: pick another than {sorted(LABELS)}")
        other_tok = load_checkpoint_tokenizer(Path(folder))
        if other_tok.tokenizer_id != tokenizer.tokenizer_id:
            raise ValueError(
                f"baseline {label!r} uses tokenizer {other_tok.tokenizer_id}, the checkpoint {tokenizer.tokenizer_id}"
            )
        others[label] = (load_model(Path(folder)), torch.Generator().manual_seed(seed))
    ds = EmbodimentDataset.open(data)
    name = ds.spec.name
    spec = check_dataset(model, tokenizer, ds)
    if context < 1 or horizon < 1 or trials < 1:
        raise ValueError(f"context={context}, horizon={horizon} and trials={trials} must be >= 1")
    if context > model.config.max_frames - 1:
        raise ValueError(f"context={context} exceeds the model's window of {model.config.max_frames - 1} frames")
    if resim_sigma <= 0:
        raise ValueError(f"resim_sigma must be > 0, got {resim_sigma}")
    if resim_windows is not None and resim_windows < 1:
        raise ValueError(f"resim_windows must be >= 1 (or None for all), got {resim_windows}")
    step = window_step if window_step is not None else ds.frame_every  # a window at every 2 Hz frame
    windows = WindowDataset(ds, context + horizon, window_step=step)
    chosen = set(select_episodes(episodes, ds.num_episodes))
    episode_of = np.searchsorted(ds.episode_starts, windows.starts, side="right") - 1
    idx = [i for i in range(len(windows)) if int(episode_of[i]) in chosen]
    if max_windows is not None:
        idx = spread(idx, max_windows)
    if not idx:
        raise ValueError(f"no window of {context + horizon} steps in episodes {sorted(chosen)}")

    # Perplexity: discrete variant, and only as far as the model's window reaches.
    ppl_skipped = None
    if model.config.variant != "discrete":
        ppl_skipped = "continuous variant: no token likelihood"
    ppl_frames = min(context + horizon, model.config.max_frames)
    resim_skipped = "not asked (--no-resim)" if resim is False else resim_unavailable(ds)
    if resim and resim_skipped:
        raise ValueError(f"PSNR* needs re-simulation: {resim_skipped}")
    resim_idx = set() if resim_skipped else set(spread(idx, resim_windows if resim_windows else len(idx)))
    resimulator = None if resim_skipped else Resimulator(ds)
    resim_gen = torch.Generator().manual_seed(seed)
    resim_rng = np.random.default_rng(seed)
    sets = FrechetSets(context + horizon) if frechet else None

    gen = torch.Generator().manual_seed(seed)
    mean = torch.tensor(spec.action_mean).repeat(spec.stride)
    std = torch.tensor(spec.action_std).repeat(spec.stride)
    psnr_rand_last = []
    per_step: dict[str, dict[str, list[torch.Tensor]]] = {m: {} for m in METRICS}
    star: dict[str, list[torch.Tensor]] = {}  # PSNR* per step: model, recorded actions, copy-last
    nll: dict[str, list[torch.Tensor]] = {}  # per-code NLL per target frame
    keep = set(spread(idx, num_examples)) if examples is not None else set()
    ceiling_idx, ceiling = set(idx[:16]), []  # tokenizer reconstruction PSNR of the first 16 windows
    rollout_s, frames_generated = 0.0, 0  # the model's own rollouts only: frames/s of this configuration
    try:
        for i in tqdm(idx, desc=f"eval {name}", disable=not progress):
            w = windows[i]
            frames = torch.from_numpy(np.asarray(w["frames"]))  # (T, H, W, 3)
            actions = torch.from_numpy(np.asarray(w["actions"]))  # (T, A)
            truth = frames[context:]  # (horizon, H, W, 3)
            all_tokens = tokenizer.encode(frames)  # (T, h, w[, C]): frame by frame
            tokens = all_tokens[None, :context]  # (1, C, h, w)
            ctx_actions = actions[None, :context]  # actions[context-1] produces the first prediction
            future = actions[None, context : context + horizon - 1]  # (1, horizon-1, A)
            rand = sample_normalized_random_actions((trials, horizon, mean.shape[0]), mean, std, generator=gen)
            # One batched rollout from the same context: candidate 0 = true actions, 1..trials =
            # random ones, the last = no actions at all (the passive baseline).
            rand_ctx = torch.cat([ctx_actions[:, :-1].expand(trials, -1, -1), rand[:, :1]], 1)
            cand_ctx = torch.cat([ctx_actions, rand_ctx, torch.full_like(ctx_actions, float("nan"))])
            cand_future = torch.cat([future, rand[:, 1:horizon], torch.full_like(future, float("nan"))])
            t0 = time.perf_counter()
            out = model.generate(
                tokens, cand_ctx, cand_future, name, num_steps=num_steps, temperature=temperature, generator=gen
            )
            rollout_s += time.perf_counter() - t0
            pred = tokenizer.decode(out.frames)  # (2 + trials, horizon, H, W, 3)
            frames_generated += pred.shape[0] * pred.shape[1]
            candidates = {
                "model": pred[0],
                "copy_last_frame": frames[context - 1].expand_as(truth),
                "passive_model": pred[-1],
            }
            for label, (other, other_gen) in others.items():
                o = other.generate(
                    tokens, ctx_actions, future, name, num_steps=num_steps, temperature=temperature, generator=other_gen
                )
                candidates[label] = tokenizer.decode(o.frames)[0]
            for metric, fn in METRICS.items():
                for key, frames_k in candidates.items():
                    per_step[metric].setdefault(key, []).append(fn(frames_k, truth))
            rand_last = pred[1 : 1 + trials, -1]
            psnr_rand_last.append(psnr(rand_last, truth[-1].expand_as(rand_last)).mean())
            if ppl_skipped is None:
                nll.setdefault("model", []).append(
                    next_frame_nll(model, all_tokens[:ppl_frames], actions[:ppl_frames], name, context)
                )
            # The tokenizer's reconstruction of the truth: the best any prediction can score.
            recon = tokenizer.decode(all_tokens[context:]) if sets is not None or i in ceiling_idx else None
            if i in ceiling_idx:
                ceiling.append(psnr(recon, truth))
            if sets is not None:
                sets.add("truth", truth, frames[:context])
                sets.add("tokenizer_reconstruction", recon, frames[:context])
                for key, frames_k in candidates.items():
                    sets.add(key, frames_k, frames[:context])
            if i in resim_idx:
                steps_star = perturb_step_actions(
                    actions[context - 1 : context + horizon - 1].numpy(),
                    np.asarray(spec.action_std),
                    resim_sigma,
                    resim_rng,
                )
                real = torch.from_numpy(
                    resimulator.window_frames(int(w["start_row"]), context + horizon, context - 1, steps_star)
                )
                a_star = torch.cat(
                    [actions[: context - 1], torch.from_numpy(steps_star), actions[context + horizon - 1 :]]
                )
                o = model.generate(
                    tokens,
                    a_star[None, :context],
                    a_star[None, context : context + horizon - 1],
                    name,
                    num_steps=num_steps,
                    temperature=temperature,
                    generator=resim_gen,
                )
                for key, frames_k in (
                    ("model", tokenizer.decode(o.frames)[0]),
                    ("recorded_actions", pred[0]),
                    ("copy_last_frame", candidates["copy_last_frame"]),
                ):
                    star.setdefault(key, []).append(psnr(frames_k, real[context:]))
                if ppl_skipped is None:
                    real_tokens = torch.cat([all_tokens[:context], tokenizer.encode(real[context:])])[:ppl_frames]
                    for key, acts in (("model", a_star), ("recorded_actions", actions)):
                        nll.setdefault(f"star_{key}", []).append(
                            next_frame_nll(model, real_tokens, acts[:ppl_frames], name, context)
                        )
            if i in keep:
                examples.append(
                    {
                        "window": i,
                        "episode": int(episode_of[i]),
                        "truth": truth.numpy().copy(),
                        "pred": pred[0].numpy(),
                        "random": pred[1].numpy(),
                    }
                )
    finally:
        if resimulator is not None:
            resimulator.close()

    steps = {m: {k: torch.stack(v).double() for k, v in d.items()} for m, d in per_step.items()}  # (W, horizon)
    pm = steps["psnr"]["model"]
    pr = torch.stack(psnr_rand_last).double()
    result = {
        "checkpoint": str(checkpoint),
        "dataset": str(data),
        "embodiment": name,
        "episodes": sorted(chosen),
        "windows": len(idx),
        "context": context,
        "horizon": horizon,
        "num_steps": num_steps,
        "temperature": temperature,
        "seed": seed,
        "baselines": {label: str(folder) for label, folder in (baselines or {}).items()},
        **{f"{m}_per_step": {k: v.mean(0).tolist() for k, v in d.items()} for m, d in steps.items()},
        "psnr_mean": {k: float(v.mean()) for k, v in steps["psnr"].items()},
        "dpsnr": {
            "value": float((pm[:, -1] - pr).mean()),
            "psnr_true_actions_last": float(pm[:, -1].mean()),
            "psnr_random_actions_last": float(pr.mean()),
            "trials": trials,
        },
        "perplexity": {"skipped": ppl_skipped}
        if ppl_skipped
        else {
            "value": float(torch.stack(nll["model"]).mean().exp()),
            "per_step": torch.stack(nll["model"]).mean(0).exp().tolist(),
            "vocab": math.prod(model.config.vocab_factors),
            "protocol": "teacher-forced next frame, all its tokens masked; per code",
        },
        "frechet": sets.result() if sets is not None else {"skipped": "not asked (--no-frechet)"},
        "resim": {"skipped": resim_skipped}
        if resim_skipped
        else {
            "sigma": resim_sigma,
            "windows": len(resim_idx),
            "psnr_star_per_step": {k: torch.stack(v).double().mean(0).tolist() for k, v in star.items()},
            "psnr_star_mean": {k: float(torch.stack(v).double().mean()) for k, v in star.items()},
            "perplexity_star": None
            if ppl_skipped
            else {k: float(torch.stack(nll[f"star_{k}"]).mean().exp()) for k in ("model", "recorded_actions")},
        },
        "tokenizer_psnr_ceiling": float(torch.cat(ceiling).mean()),
        "frames_per_s": frames_generated / rollout_s,
        "rollout_seconds": rollout_s,  # model.generate only (not decoding, metrics or baselines)
    }
    return result


@torch.no_grad()
def evaluate_long_horizon(
    checkpoint: str | Path,
    data: str | Path,
    context: int = 4,
    horizon: int = 100,
    num_steps: int = 2,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Open-loop stability: from the first ``context`` frames of every episode long enough,
    roll out ``horizon`` frames under the recorded actions (the window slides past the
    model's ``max_frames``) and score each step's PSNR/SSIM against the recording, beside
    copy-the-last-frame and the passive model. Long episodes: ``sim.generate --steps``."""
    model = load_model(checkpoint)
    tokenizer = load_checkpoint_tokenizer(Path(checkpoint))
    ds = EmbodimentDataset.open(data)
    name = ds.spec.name
    check_dataset(model, tokenizer, ds)
    if context < 1 or horizon < 1 or context > model.config.max_frames - 1:
        raise ValueError(
            f"need 1 <= context <= {model.config.max_frames - 1} and horizon >= 1, got {context}, {horizon}"
        )
    span = (context + horizon) * ds.spec.stride
    starts = [int(s) for s, n in zip(ds.episode_starts, ds.episode_lengths, strict=True) if n >= span]
    if not starts:
        longest = max(ds.episode_lengths) // ds.spec.stride
        raise ValueError(
            f"no episode of {data} has {context + horizon} 2 Hz steps (the longest has {longest}): "
            "record or generate longer ones (python -m hma_ros.sim.generate --steps)"
        )
    windows = WindowDataset(ds, context + horizon, window_step=ds.frame_every)
    first = [int(np.searchsorted(windows.starts, s)) for s in starts]  # each episode's first window
    gen = torch.Generator().manual_seed(seed)
    per_step: dict[str, dict[str, list[torch.Tensor]]] = {m: {} for m in ("psnr", "ssim")}
    rollout_s = 0.0
    for i in tqdm(first, desc=f"long-horizon {name}", disable=not progress):
        w = windows[i]
        frames = torch.from_numpy(np.asarray(w["frames"]))
        actions = torch.from_numpy(np.asarray(w["actions"]))
        truth = frames[context:]
        ctx_actions = actions[None, :context]
        future = actions[None, context : context + horizon - 1]
        t0 = time.perf_counter()
        out = model.generate(
            tokenizer.encode(frames[None, :context]),
            torch.cat([ctx_actions, torch.full_like(ctx_actions, float("nan"))]),  # true actions, passive
            torch.cat([future, torch.full_like(future, float("nan"))]),
            name,
            num_steps=num_steps,
            temperature=temperature,
            generator=gen,
        )
        rollout_s += time.perf_counter() - t0
        pred = tokenizer.decode(out.frames)
        candidates = {
            "model": pred[0],
            "copy_last_frame": frames[context - 1].expand_as(truth),
            "passive_model": pred[1],
        }
        for metric, fn in (("psnr", psnr), ("ssim", ssim)):
            for key, frames_k in candidates.items():
                per_step[metric].setdefault(key, []).append(fn(frames_k, truth))
    return {
        "dataset": str(data),
        "episodes": len(first),
        "context": context,
        "horizon": horizon,
        **{
            f"{m}_per_step": {k: torch.stack(v).double().mean(0).tolist() for k, v in d.items()}
            for m, d in per_step.items()
        },
        "frames_per_s": 2 * len(first) * horizon / rollout_s,
    }


def check_dataset(model, tokenizer, ds: EmbodimentDataset):
    """The model's spec for the dataset's embodiment, after checking actions and frame size match."""
    name = ds.spec.name
    spec = model.config.embodiment(name)  # KeyError names the known embodiments
    if (spec.action_dim, spec.stride) != (ds.spec.action_dim, ds.spec.stride):
        raise ValueError(
            f"dataset {name!r} actions ({ds.spec.action_dim} at {ds.spec.control_hz} Hz) do not match the model's"
        )
    if tuple(ds.image_size) != tuple(tokenizer.image_size):
        raise ValueError(f"dataset frames are {ds.image_size}, the tokenizer expects {tokenizer.image_size}")
    return spec


def spread(items: list, k: int) -> list:
    """At most ``k`` of ``items``, evenly spaced from the first."""
    return items[:: max(1, math.ceil(len(items) / k))][:k]


METRICS = {"psnr": psnr, "ssim": ssim, "lpips": lpips}  # per frame; LPIPS: lower is better
LABELS = {
    "model": "model",
    "copy_last_frame": "copy-last-frame",
    "passive_model": "passive model",
    "tokenizer_reconstruction": "tokenizer reconstruction",
}
LABELS_STAR = {
    "model": "model, perturbed actions",
    "recorded_actions": "model, recorded actions",
    "copy_last_frame": "copy-last-frame",
}


def _header(steps: list[int]) -> list[str]:
    return ["| steps ahead | " + " | ".join(str(k) for k in steps) + " |", "|---|" + "---|" * len(steps)]


def _step_rows(per_step: dict[str, dict[str, list[float]]], steps: list[int], metrics) -> list[str]:
    rows = []
    for metric, fmt in metrics:
        for key, values in per_step.get(metric, {}).items():
            label = f"{metric.upper()} {LABELS.get(key, key)}"
            rows.append(f"| {label} | " + " | ".join(f"{values[k - 1]:{fmt}}" for k in steps) + " |")
    return rows


def format_table(r: dict[str, Any]) -> str:
    """The numbers of :func:`evaluate` (and ``long_horizon`` if present) as Markdown: a first
    summary line, the per-step table, then a paragraph per further metric."""
    steps = list(range(1, r["horizon"] + 1))
    lines = [
        f"{r['embodiment']}: {r['windows']} windows from episodes {r['episodes']}, "
        f"context {r['context']}, M={r['num_steps']}, temperature {r['temperature']}",
        *_header(steps),
        *_step_rows(
            {m: r.get(f"{m}_per_step", {}) for m in METRICS},
            steps,
            (("psnr", ".2f"), ("ssim", ".3f"), ("lpips", ".3f")),
        ),
    ]
    d = r["dpsnr"]
    lines.append(
        f"\ndPSNR {d['value']:.2f} dB (last frame: true actions {d['psnr_true_actions_last']:.2f} dB, "
        f"random actions {d['psnr_random_actions_last']:.2f} dB, {d['trials']} trials); "
        f"tokenizer ceiling {r['tokenizer_psnr_ceiling']:.2f} dB; {r['frames_per_s']:.1f} generated frames/s"
    )
    p = r.get("perplexity", {})
    if "value" in p:
        lines.append(
            f"\nPerplexity {p['value']:.2f} per code of {p['vocab']} ({p['protocol']}); "
            "by step: " + ", ".join(f"{v:.1f}" for v in p["per_step"])
        )
    fr = r.get("frechet", {})
    for kind, title in (("fid", "FID"), ("fvd", "FVD")):
        f = fr.get(kind, {})
        if "scores" in f:
            n = f"{f['samples']} frames" if kind == "fid" else f"{f['samples']} videos of {f['frames']} frames"
            scores = ", ".join(f"{LABELS.get(k, k)} {v:.1f}" for k, v in f["scores"].items())
            lines.append(f"\n{title} (lower is better, {n}; small N biases it upwards): {scores}")
    rs = r.get("resim", {})
    if "psnr_star_per_step" in rs:
        lines += [
            f"\nPSNR* against the simulator under perturbed actions ({rs['windows']} windows, "
            f"future actions shifted by {rs['sigma']:g} std per 2 Hz step, re-simulated):",
            "",
            *_header(steps),
        ]
        star = {LABELS_STAR.get(k, k): v for k, v in rs["psnr_star_per_step"].items()}
        lines += [f"| PSNR* {k} | " + " | ".join(f"{x:.2f}" for x in v) + " |" for k, v in star.items()]
        ps = rs.get("perplexity_star")
        if ps:
            lines.append(
                f"\nPerplexity* of the re-simulated frames: {ps['model']:.2f} given the perturbed actions, "
                f"{ps['recorded_actions']:.2f} given the recorded ones"
            )
    lh = r.get("long_horizon")
    if lh:
        shown = sorted({k for k in (1, 2, 5, 10, 20, 50, 100, 200, lh["horizon"]) if k <= lh["horizon"]})
        lines += [
            f"\nLong horizon: {lh['episodes']} episodes of `{lh['dataset']}`, {lh['context']} context frames, "
            f"{lh['horizon']} frames open loop ({lh['frames_per_s']:.1f} generated frames/s):",
            "",
            *_header(shown),
            *_step_rows({m: lh[f"{m}_per_step"] for m in ("psnr", "ssim")}, shown, (("psnr", ".2f"), ("ssim", ".3f"))),
        ]
    skipped = [
        f"{title}: {entry['skipped']}"
        for title, entry in (
            ("perplexity", r.get("perplexity", {})),
            ("FID/FVD", r.get("frechet", {})),
            ("FVD", r.get("frechet", {}).get("fvd", {})),
            ("PSNR*/perplexity*", r.get("resim", {})),
        )
        if "skipped" in entry
    ]
    if skipped:
        lines.append("\nNot computed: " + "; ".join(skipped))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m hma_ros.eval.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="checkpoint folder (config.json + model.safetensors + tokenizer/)")
    ap.add_argument("--data", required=True, help="one embodiment's dataset folder")
    ap.add_argument("--episodes", default="last:4", help="'all', 'last:K', 'first:K' or '3,7,9'")
    ap.add_argument("--context", type=int, default=4)
    ap.add_argument("--horizon", type=int, default=8)
    ap.add_argument("--trials", type=int, default=5, help="random-action rollouts for dPSNR (paper: 5)")
    ap.add_argument("--num-steps", type=int, default=2, help="unmasking steps per frame (M)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-windows", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    ap.add_argument("--report", default=None, metavar="DIR", help="write a Markdown report with curves and videos")
    ap.add_argument("--examples", type=int, default=4, help="windows shown in the report")
    ap.add_argument("--no-frechet", action="store_true", help="skip FID and FVD (the slowest metrics)")
    resim = ap.add_mutually_exclusive_group()
    resim.add_argument("--no-resim", action="store_true", help="skip PSNR*/perplexity* (re-simulation)")
    resim.add_argument("--resim", action="store_true", help="require PSNR*/perplexity* (error if impossible)")
    ap.add_argument("--resim-sigma", type=float, default=0.5, help="perturbation, action stds per 2 Hz step")
    ap.add_argument("--resim-windows", type=int, default=None, help="re-simulate at most this many windows")
    ap.add_argument("--long-data", default=None, help="dataset of long episodes for open-loop stability")
    ap.add_argument("--long-horizon", type=int, default=100, help="frames rolled out open loop on --long-data")
    ap.add_argument(
        "--baseline",
        action="append",
        default=[],
        metavar="NAME=CKPT",
        help="another checkpoint on the same windows, e.g. from_scratch=out/.../step_00001000 (repeatable)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.examples < 1:
        raise SystemExit(f"evaluate: --examples must be >= 1, got {args.examples}")
    examples: list[dict[str, Any]] | None = [] if args.report else None
    baselines = {}
    for item in args.baseline:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            raise SystemExit(f"evaluate: --baseline wants NAME=CHECKPOINT, got {item!r}")
        baselines[label] = folder
    try:
        r = evaluate(
            args.checkpoint,
            args.data,
            args.episodes,
            args.context,
            args.horizon,
            args.trials,
            args.num_steps,
            args.temperature,
            max_windows=args.max_windows,
            seed=args.seed,
            examples=examples,
            num_examples=args.examples,
            baselines=baselines,
            frechet=not args.no_frechet,
            resim=False if args.no_resim else (True if args.resim else None),
            resim_sigma=args.resim_sigma,
            resim_windows=args.resim_windows,
        )
        if args.long_data:
            r["long_horizon"] = evaluate_long_horizon(
                args.checkpoint,
                args.long_data,
                args.context,
                args.long_horizon,
                args.num_steps,
                args.temperature,
                seed=args.seed,
            )
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise SystemExit(f"evaluate: {e}") from None
    log.info("\n%s", format_table(r))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(r, indent=2) + "\n")
        log.info("wrote %s", args.out)
    if args.report:
        from hma_ros.eval.report import write_report

        r["command"] = "python -m hma_ros.eval.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
        log.info("wrote %s", write_report(r, examples, args.report))
    return r


if __name__ == "__main__":
    main()
