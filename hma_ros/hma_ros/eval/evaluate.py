"""Evaluate a checkpoint on held-out episodes: per-step PSNR/SSIM/LPIPS against copy-the-last-frame
and the passive model, and controllability (dPSNR) as the paper defines it.

For every window of ``context + horizon`` 2 Hz steps in the chosen episodes, the model sees the
first ``context`` frames (tokenised) and rolls out ``horizon`` frames with the true actions;
predictions are decoded and compared with the real frames. Baselines: copy-the-last-frame repeats
the last real context frame; the passive model is the same checkpoint with every action unknown
(NaN: the paper's action-free video setting, which it is trained on), so the gap to it is what
the actions buy. dPSNR (arXiv 2502.04296, §4; IRASim): PSNR of the last predicted
frame with the true actions minus its PSNR with random actions drawn N(0, 1) in the normalised
action space, averaged over ``trials`` draws.

    python -m hma_ros.eval.evaluate CKPT --data DATASET_FOLDER [--episodes last:4] \
        [--context 4] [--horizon 8] [--trials 5] [--out out/eval.json] [--report out/eval_report]

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
from hma_ros.eval.metrics import lpips, psnr, sample_normalized_random_actions, ssim
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
) -> dict[str, Any]:
    """The numbers as a JSON-ready dict. If ``examples`` is a list, up to ``num_examples``
    windows spread over the evaluated ones are appended to it: ``window``, ``episode`` and
    uint8 ``truth``, ``pred`` (true actions) and ``random`` (first random-action trial)
    frames ``(horizon, H, W, 3)``, for :func:`hma_ros.eval.report.write_report`.

    ``baselines`` maps names to other checkpoints (e.g. the same recipe trained from scratch,
    the paper's HMA vs HMA+): each rolls out the same windows under the true actions, with
    its own generator seeded ``seed``, and appears in the per-step metrics under its name.
    They must share the checkpoint's tokenizer, so the frames compared are decoded alike."""
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
    spec = model.config.embodiment(name)  # KeyError names the known embodiments
    if (spec.action_dim, spec.stride) != (ds.spec.action_dim, ds.spec.stride):
        raise ValueError(
            f"dataset {name!r} actions ({ds.spec.action_dim} at {ds.spec.control_hz} Hz) do not match the model's"
        )
    if context < 1 or horizon < 1 or trials < 1:
        raise ValueError(f"context={context}, horizon={horizon} and trials={trials} must be >= 1")
    if context > model.config.max_frames - 1:
        raise ValueError(f"context={context} exceeds the model's window of {model.config.max_frames - 1} frames")
    if tuple(ds.image_size) != tuple(tokenizer.image_size):
        raise ValueError(f"dataset frames are {ds.image_size}, the tokenizer expects {tokenizer.image_size}")
    step = window_step if window_step is not None else ds.frame_every  # a window at every 2 Hz frame
    windows = WindowDataset(ds, context + horizon, window_step=step)
    chosen = set(select_episodes(episodes, ds.num_episodes))
    episode_of = np.searchsorted(ds.episode_starts, windows.starts, side="right") - 1
    idx = [i for i in range(len(windows)) if int(episode_of[i]) in chosen]
    if max_windows is not None:
        idx = spread(idx, max_windows)
    if not idx:
        raise ValueError(f"no window of {context + horizon} steps in episodes {sorted(chosen)}")

    gen = torch.Generator().manual_seed(seed)
    mean = torch.tensor(spec.action_mean).repeat(spec.stride)
    std = torch.tensor(spec.action_std).repeat(spec.stride)
    psnr_rand_last = []
    per_step: dict[str, dict[str, list[torch.Tensor]]] = {m: {} for m in METRICS}
    keep = set(spread(idx, num_examples)) if examples is not None else set()
    rollout_s, frames_generated = 0.0, 0  # the model's own rollouts only: frames/s of this configuration
    for i in tqdm(idx, desc=f"eval {name}", disable=not progress):
        w = windows[i]
        frames = torch.from_numpy(np.asarray(w["frames"]))  # (T, H, W, 3)
        actions = torch.from_numpy(np.asarray(w["actions"]))  # (T, A)
        truth = frames[context:]  # (horizon, H, W, 3)
        tokens = tokenizer.encode(frames[:context][None])  # (1, C, h, w)
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
        "tokenizer_psnr_ceiling": None,
        "frames_per_s": frames_generated / rollout_s,
        "rollout_seconds": rollout_s,  # model.generate only (not decoding, metrics or baselines)
    }
    # What the tokenizer alone loses: no prediction can beat reconstructing the true frames.
    truth16 = [np.asarray(windows[i]["frames"])[context:] for i in idx[:16]]
    recon = torch.stack([tokenizer.reconstruct(t) for t in truth16])
    result["tokenizer_psnr_ceiling"] = float(psnr(recon, torch.from_numpy(np.stack(truth16))).mean())
    return result


def spread(items: list, k: int) -> list:
    """At most ``k`` of ``items``, evenly spaced from the first."""
    return items[:: max(1, math.ceil(len(items) / k))][:k]


METRICS = {"psnr": psnr, "ssim": ssim, "lpips": lpips}  # per frame; LPIPS: lower is better
LABELS = {"model": "model", "copy_last_frame": "copy-last-frame", "passive_model": "passive model"}


def format_table(r: dict[str, Any]) -> str:
    steps = range(1, r["horizon"] + 1)
    lines = [
        f"{r['embodiment']}: {r['windows']} windows from episodes {r['episodes']}, "
        f"context {r['context']}, M={r['num_steps']}, temperature {r['temperature']}",
        "| steps ahead | " + " | ".join(str(k) for k in steps) + " |",
        "|---|" + "---|" * r["horizon"],
    ]
    for metric, fmt in (("psnr", ".2f"), ("ssim", ".3f"), ("lpips", ".3f")):
        for key, values in r.get(f"{metric}_per_step", {}).items():
            label = f"{metric.upper()} {LABELS.get(key, key)}"
            lines.append(f"| {label} | " + " | ".join(f"{v:{fmt}}" for v in values) + " |")
    d = r["dpsnr"]
    lines.append(
        f"\ndPSNR {d['value']:.2f} dB (last frame: true actions {d['psnr_true_actions_last']:.2f} dB, "
        f"random actions {d['psnr_random_actions_last']:.2f} dB, {d['trials']} trials); "
        f"tokenizer ceiling {r['tokenizer_psnr_ceiling']:.2f} dB; {r['frames_per_s']:.1f} generated frames/s"
    )
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
