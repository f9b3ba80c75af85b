"""Train a tokenizer (FSQ, VAE) or write a pixel tokenizer, reporting held-out PSNR.

    python -m hma_ros.train.tokenizer --kind fsq --data datasets/sim \
        --out hma_ros/models/tokenizer_fsq64 --steps 4000 [--batch 32] [--lr 1e-3] [--seed 0]

``--data`` is ``DIR[,DIR|FILE.npy...]`` (embodiment folders, dataset roots, or ``.npy``
arrays of uint8 frames), or ``synthetic:N`` for N generated frames of coloured shapes. Every
``1/--holdout``-th episode of a dataset (the tail of a ``.npy``) is held out; its PSNR (dB,
through the real uint8 encode -> decode path, overall and per embodiment) is logged every
``--eval-every`` steps, when the sources are also re-read (a dataset still being generated
contributes its new episodes and embodiments).

The output folder always holds a loadable tokenizer (``tokenizer.json`` +
``tokenizer.safetensors``) plus ``train_state.json`` / ``train_state.safetensors``
(step, history, optimiser). Every write is atomic, and running the same command again
resumes from the last save (``--steps`` is the total).

Losses: L1 + MSE on [-1, 1] pixels (no perceptual loss: it would need downloaded weights);
the VAE adds ``--kl-weight`` x the per-element KL to a unit Gaussian (LDM-style, small).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hma_ros.tokenizers import TOKENIZERS, Tokenizer, build_tokenizer, load_tokenizer, psnr_uint8
from hma_ros.tokenizers.base import atomic_write_bytes, atomic_write_json, frames_to_float
from hma_ros.tokenizers.tokenize_data import embodiment_folders

log = logging.getLogger(__name__)

STATE_JSON = "train_state.json"
STATE_TENSORS = "train_state.safetensors"
#: Defaults per kind where they differ (the VAE's decoder is deeper: a gentler rate).
DEFAULT_LR = {"fsq": 1e-3, "vae": 5e-4, "pixels": 0.0}


# ---- data ----------------------------------------------------------------------------------
def synthetic_frames(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` uint8 frames ``(n, size, size, 3)``: a tinted background and 1-4 coloured boxes.

    A stand-in for simulator frames in tests and smoke runs: flat regions and sharp edges
    at random places, so a tokenizer has to learn both colour and geometry.
    """
    if n > 1000:  # bound peak memory (the masks below are (n, size, size))
        return np.concatenate([synthetic_frames(min(1000, n - i), size, seed + i) for i in range(0, n, 1000)])
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    bg = rng.integers(0, 256, (n, 1, 1, 3))
    grad = (yy[None, :, :, None] * rng.uniform(-1, 1, (n, 1, 1, 3)) * 48 / size).astype(np.int64)
    img = np.clip(bg + grad, 0, 255)
    for _ in range(4):
        present = rng.random(n) < 0.75
        s = rng.integers(size // 8, size // 3, (n, 2))
        p0 = rng.integers(0, size, (n, 2)) - s // 2
        inside = (
            (yy[None] >= p0[:, 0, None, None])
            & (yy[None] < (p0[:, 0] + s[:, 0])[:, None, None])
            & (xx[None] >= p0[:, 1, None, None])
            & (xx[None] < (p0[:, 1] + s[:, 1])[:, None, None])
            & present[:, None, None]
        )  # (n, size, size)
        img = np.where(inside[..., None], rng.integers(0, 256, (n, 1, 1, 3)), img)
    return img.astype(np.uint8)


class FrameData:
    """Training and held-out frames over several sources (memmaps stay on disk).

    Dataset folders hold out whole episodes (every ``round(1 / holdout)``-th, so the split
    is stable while a generator keeps appending); ``.npy`` sources hold out their tail.
    :meth:`refresh` re-reads the sources, picking up appended episodes and new embodiments.
    """

    def __init__(self, spec: str, holdout: float, seed: int) -> None:
        self.spec, self.holdout, self.seed = spec, holdout, seed
        self.sizes: dict[str, int] = {}
        self.refresh()

    def _sources(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``[(name, frames, held-out mask per frame)]``."""
        if self.spec.startswith("synthetic:"):
            frames = synthetic_frames(int(self.spec.split(":", 1)[1]), seed=self.seed + 12345)
            return [("synthetic", frames, _tail_mask(len(frames), self.holdout))]
        from hma_ros.data.format import EmbodimentDataset

        out = []
        every = max(2, round(1 / self.holdout)) if self.holdout > 0 else 0
        for item in filter(None, (s.strip() for s in self.spec.split(","))):
            if item.endswith(".npy"):
                frames = np.load(item, mmap_mode="r")
                out.append((Path(item).stem, frames, _tail_mask(len(frames), self.holdout)))
                continue
            for folder in embodiment_folders(item):
                ds = EmbodimentDataset.open(folder, check_values=False)
                per_ep = np.asarray(ds.episode_lengths, np.int64) // ds.frame_every
                ep = np.repeat(np.arange(len(per_ep)), per_ep)  # episode of every frame
                held = (ep % every == every - 1) if every else np.zeros(len(ep), bool)
                if every and not held.any() and len(per_ep) > 1:
                    held = ep == len(per_ep) - 1
                out.append((ds.spec.name, ds.frames, held))
        if not out:
            raise ValueError(f"no frames found in {self.spec!r}")
        return out

    def refresh(self) -> bool:
        """Re-read the sources; returns True when the frames changed."""
        sources = self._sources()
        sizes = {tuple(a.shape[1:3]) for _, a, _ in sources}
        if len(sizes) != 1:
            raise ValueError(f"all sources must share one image size, got {sorted(sizes)}")
        image_size = sizes.pop()
        if self.sizes and image_size != self.image_size:
            raise ValueError(f"image size changed from {self.image_size} to {image_size}")
        self.image_size: tuple[int, int] = image_size  # type: ignore[assignment]
        new_sizes = {name: len(a) for name, a, _ in sources}
        changed = new_sizes != self.sizes
        self.sizes = new_sizes
        self.names = [name for name, _, _ in sources]
        self.frames = [a for _, a, _ in sources]
        self.train_idx = [np.flatnonzero(~h) for _, _, h in sources]
        self.held_idx = [np.flatnonzero(h) for _, _, h in sources]
        if sum(len(i) for i in self.train_idx) == 0:
            raise ValueError(f"no training frames in {self.spec!r}")
        if changed:
            for name, tr, he in zip(self.names, self.train_idx, self.held_idx, strict=True):
                log.info("%s: %d training frames, %d held out", name, len(tr), len(he))
        return changed

    def batch(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """uint8 ``(size, H, W, 3)``: a source per frame with weight ~ n^(1/3) (as HMA's
        mixture over embodiments, so a small or young dataset is not drowned), then uniform."""
        n = np.array([len(i) for i in self.train_idx], np.float64)
        w = np.cbrt(n)
        src = rng.choice(len(n), size=size, p=w / w.sum())
        parts = []
        for s in np.unique(src):
            local = np.sort(self.train_idx[s][rng.integers(0, len(self.train_idx[s]), int((src == s).sum()))])
            parts.append(np.asarray(self.frames[s][local]))
        return np.concatenate(parts)

    def eval_frames(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` held-out frames evenly spaced within each source, and their source index."""
        per = max(1, n // len(self.frames))
        frames, owner = [], []
        for s, idx in enumerate(self.held_idx):
            if len(idx) == 0:
                continue
            pick = idx[np.linspace(0, len(idx) - 1, min(per, len(idx))).astype(int)]
            frames.append(np.asarray(self.frames[s][pick]))
            owner.append(np.full(len(pick), s))
        if not frames:  # nothing held out: fall back to training frames (and say so)
            log.warning("no held-out frames: PSNR is measured on training frames")
            return np.asarray(self.frames[0][: min(n, len(self.frames[0]))]), np.zeros(min(n, len(self.frames[0])), int)
        return np.concatenate(frames), np.concatenate(owner)


def _tail_mask(n: int, fraction: float) -> np.ndarray:
    held = np.zeros(n, bool)
    k = max(1, int(round(n * fraction))) if n > 1 and fraction > 0 else 0
    held[n - k :] = True
    return held


# ---- optimiser state in safetensors (no pickle) ---------------------------------------------
def optimizer_to_safetensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_safetensors(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in [*tensors.items(), *meta["scalars"].items()]:
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ---- training --------------------------------------------------------------------------------
def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def evaluate(tok: Tokenizer, frames: np.ndarray, owner: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Held-out PSNR overall (mean over frames) and per source, plus code usage (discrete)."""
    was_training = tok.training
    tok.eval()
    tokens = tok.encode(frames)
    recon = tok.decode(tokens).cpu().numpy()
    out: dict[str, Any] = {"psnr": psnr_uint8(frames, recon), "eval_frames": len(frames)}
    if len(names) > 1:
        out["psnr_per_source"] = {names[s]: psnr_uint8(frames[owner == s], recon[owner == s]) for s in np.unique(owner)}
    if tok.kind == "discrete":
        out["code_usage"] = float(torch.unique(tokens).numel() / tok.vocab_size)
    tok.train(was_training)
    return out


def save_all(out: Path, tok: Tokenizer, opt: torch.optim.Optimizer | None, state: dict[str, Any]) -> str:
    """Tokenizer, then optimiser, then the JSON that names both (the commit point)."""
    from safetensors.torch import save as st_save

    tid = tok.save(out)
    if opt is not None:
        tensors, meta = optimizer_to_safetensors(opt)
        atomic_write_bytes(out / STATE_TENSORS, st_save(tensors))
        state["optimizer"] = meta
    state["tokenizer_id"] = tid
    atomic_write_json(out / STATE_JSON, state)
    return tid


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) training as the CLI describes; returns the final ``train_state``."""
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = FrameData(args.data, args.holdout, args.seed)
    eval_set = data.eval_frames(args.eval_frames)
    overrides = json.loads(args.config) if args.config else {}
    lr = DEFAULT_LR[args.kind] if args.lr is None else args.lr

    state: dict[str, Any]
    if (out / STATE_JSON).is_file() and not args.restart:
        state = json.loads((out / STATE_JSON).read_text())
        if state["kind"] != args.kind:
            raise ValueError(f"{out} holds a {state['kind']} run, not {args.kind}; use another --out or --restart")
        tok = load_tokenizer(out, device=args.device)
        if tok.tokenizer_id != state["tokenizer_id"]:
            raise ValueError(f"{out}: tokenizer files do not match {STATE_JSON} (interrupted save?); use --restart")
        log.info("resuming %s from step %d", out, state["step"])
    else:
        torch.manual_seed(args.seed)
        tok = build_tokenizer(args.kind, image_size=data.image_size, **overrides).to(args.device)
        state = {"kind": args.kind, "step": 0, "history": [], "args": vars(args)}
    n_params = sum(p.numel() for p in tok.parameters())
    state["params"] = n_params
    log.info(
        "%s tokenizer %s: %d params, grid %s, config %s",
        args.kind,
        tok.tokenizer_id,
        n_params,
        tok.grid,
        dataclasses.asdict(tok.config),
    )

    opt = None
    if n_params:
        opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=1e-4)
        if state["step"] and (out / STATE_TENSORS).is_file():
            from safetensors.torch import load_file

            optimizer_from_safetensors(opt, load_file(str(out / STATE_TENSORS)), state["optimizer"])

    def record(step: int, loss: float | None) -> None:
        nonlocal eval_set
        if data.refresh():
            eval_set = data.eval_frames(args.eval_frames)
        m = evaluate(tok, *eval_set, data.names)
        state["history"].append({"step": step, "loss": loss, "time": time.time(), **m})
        per = ", ".join(f"{k} {v:.2f}" for k, v in m.get("psnr_per_source", {}).items())
        log.info(
            "step %d: held-out PSNR %.2f dB on %d frames%s%s",
            step,
            m["psnr"],
            m["eval_frames"],
            f" ({per})" if per else "",
            f", code usage {m['code_usage']:.1%}" if "code_usage" in m else "",
        )

    if not state["history"]:
        record(0, None)
    total = args.steps if opt is not None else 0
    tok.train()
    bar = tqdm(
        range(state["step"], total),
        initial=state["step"],
        total=total,
        desc=f"train {args.kind}",
        disable=total <= state["step"],
        mininterval=2.0,
    )
    loss_avg = None
    for step in bar:
        rng = np.random.default_rng([args.seed, step])  # resumable: batch depends on (seed, step) only
        x = frames_to_float(torch.from_numpy(data.batch(rng, args.batch)).to(args.device))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, lr, args.warmup)
        recon, aux = tok(x)
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        if args.kind == "vae":
            # diffusers' kl() sums over latent elements: make it per element.
            loss = loss + args.kl_weight * aux.mean() / (tok.token_dim * math.prod(tok.grid))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        bar.set_postfix(loss=f"{loss_avg:.4f}", psnr=f"{state['history'][-1]['psnr']:.2f}")
        done = step + 1
        stop = args.stop_at is not None and done >= args.stop_at
        if done % args.eval_every == 0 or done == total or stop:
            state["step"] = done
            record(done, loss_avg)
            if args.kind == "vae":
                tok.set_latent_stats(torch.from_numpy(data.batch(np.random.default_rng(args.seed), 512)))
            save_all(out, tok, opt, state)
        if stop:
            log.info("stopping at step %d of %d (--stop-at); run again to resume", done, total)
            break
    if opt is None or state["step"] == 0 or not (out / STATE_JSON).is_file():
        state["step"] = max(state["step"], total)
        save_all(out, tok, opt, state)
    first, last = state["history"][0], state["history"][-1]
    log.info(
        "done: %s held-out PSNR %.2f dB (step 0: %.2f dB) -> %s", tok.tokenizer_id, last["psnr"], first["psnr"], out
    )
    return state


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", required=True, choices=sorted(TOKENIZERS))
    ap.add_argument("--data", required=True, help="DIR[,DIR|FILE.npy...] or synthetic:N")
    ap.add_argument("--out", required=True, help="output folder (resumed if it holds a run)")
    ap.add_argument("--steps", type=int, default=4000, help="total optimiser steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {DEFAULT_LR})")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kl-weight", type=float, default=1e-4, help="VAE only: weight of the per-element KL")
    ap.add_argument("--config", default=None, help="JSON overrides of the tokenizer config, e.g. '{\"patch\": 4}'")
    ap.add_argument("--holdout", type=float, default=0.05, help="held-out fraction at the end of each source")
    ap.add_argument("--eval-every", type=int, default=500, help="steps between held-out PSNR and checkpoint")
    ap.add_argument("--eval-frames", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--stop-at", type=int, default=None, help="save and stop at this step (resume later)")
    ap.add_argument("--restart", action="store_true", help="ignore a run already in --out")
    args = ap.parse_args(argv)
    if args.steps < 0 or args.batch < 1 or args.eval_every < 1:
        ap.error("--steps must be >= 0, --batch and --eval-every >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
