"""Per-frame generation benchmark of the HMA presets: latency, FLOPs, FLOP/s, parameters.

    python -m hma_ros.model.benchmark --out out/benchmark_model.json [--quick] [--device cuda]

Per preset and variant: milliseconds per generated frame at batch 1 and batch N candidates,
M decoding steps, with the temporal KV cache (decode the frame after the cached context, then
commit it, fused into M passes: ``HMA.advance``) and without it (M passes over the whole window), for
contexts of 4 and 11 frames ("4+1", "11+1"). The two paths are timed in alternating rounds and
the speed-up is the median within-round ratio (``measure_pair``). Weights are random: speed
does not depend on them. Targets checked, on wall-clock time: cached >= 5x faster than the
re-forward at 11+1 (batch 1 and batch N); hma_small >= 20 frames/s at batch 1.

``--compile inductor`` adds rows ("engine": "compiled-inductor") at 11+1 where both paths run
the trunk (``HMA._forward_frames``, about 90% of a frame) compiled by inductor with frozen
weights and its C++ wrapper: no Python and no per-op dispatch between kernels. A small eager
step is bound by its op count; these rows separate that cost from the arithmetic the cache
saves. The first calls compile (minutes per shape on 2 cores; a C++ compiler is needed).
``--compile eager`` traces without compiling (the plumbing, for tests).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import EmbodimentSpec
from .hma import HMA
from .presets import make_config

EMBODIMENT = EmbodimentSpec("franka", 8, 20.0)  # 7 joints + gripper at 20 Hz: 80 numbers per step


def _say(line: str) -> None:
    print(line, flush=True)  # noqa: T201 (a benchmark prints its table)


def parameter_counts(model: HMA) -> dict[str, int]:
    """Trunk (shared) vs one embodiment's own modules (stem, action head, modulations)."""
    name = model.config.embodiments[0].name
    own = (f"stems.{name}.", f"action_heads.{name}.", f"modulation.{name}.")
    total = sum(p.numel() for p in model.parameters())
    per_emb = sum(p.numel() for n, p in model.named_parameters() if any(s in n for s in own))
    return {"total": total, "trunk": total - per_emb, "per_embodiment": per_emb}


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA), so a wall-clock timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frame_fn(model: HMA, batch: int, context: int, cached: bool, num_steps: int, device: torch.device):
    """A closure that generates one frame after ``context`` frames, the way a rollout does."""
    c = model.config
    A = EMBODIMENT.step_action_dim
    g = torch.Generator(device=device).manual_seed(0)
    if c.variant == "discrete":
        ctx = torch.randint(0, c.vocab_size, (1, context, c.tokens_h, c.tokens_w), device=device, generator=g)
    else:
        ctx = torch.randn(1, context, c.tokens_h, c.tokens_w, c.token_dim, device=device, generator=g)
    ctx_actions = torch.randn(1, context, A, device=device, generator=g)
    action = torch.randn(batch, A, device=device, generator=g)
    if cached:
        cache = model.append_frames(model.init_cache(1, device), ctx[:, :-1], ctx_actions[:, :-1], 0)
        cache = cache.expand(batch)
        last = ctx[:, -1].expand(batch, *ctx.shape[2:])
        last_in = ctx_actions[:, -2].expand(batch, -1) if context > 1 else torch.full_like(action, float("nan"))

        def run():  # commit the newest frame and decode the next one, fused (HMA.advance)
            model.advance(cache, last, last_in, action, 0, num_steps=num_steps, generator=g)

    else:
        future = torch.zeros(batch, 0, A, device=device)
        acts = torch.cat([ctx_actions[:, :-1], action[:1, None]], dim=1)

        def run():
            model.generate(ctx, acts, future, 0, num_steps=num_steps, generator=g, use_cache=False)

    return run


def compiled_trunk(model: HMA, backend: str) -> HMA:
    """A copy of ``model`` whose trunk (``_forward_frames``, shared by the cached step, the
    commit and the re-forward) is ``torch.compile``d for fixed shapes; sampling stays eager."""
    twin = copy.deepcopy(model)
    # One graph per shape: prefill, commit + decode, decode, re-forward, at each batch size,
    # and the expanded (stride 0) cache apart from a pushed one: more than dynamo's default 8.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    opts = {"options": {"freezing": True, "cpp_wrapper": True}} if backend == "inductor" else {}
    twin._forward_frames = torch.compile(twin._forward_frames, backend=backend, dynamic=False, fullgraph=True, **opts)
    return twin


def attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one ``scaled_dot_product_attention``: scores = Q K^T (2 Sq Sk D per head) and
    out = softmax(scores) V (2 Sq Sk Dv per head); softmax and scaling are not counted (as for
    every other op), nor is a causal mask's skipped half."""
    b, h, sq, d = query_shape
    sk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * sq * sk * (d + dv)


def _cpu_attention_ops() -> dict:
    """The CPU attention kernels torch's ``FlopCounterMode`` has no formula for (it counts the
    CUDA ones): without them every CPU count missed attention (~13% of an HMA-Base frame)."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: attention_flops}


def count_flops(run) -> float:
    """FLOPs of one call of ``run`` (matrix products, convolutions and attention)."""
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_ops())
    with torch.no_grad(), counter:
        run()
    return float(counter.get_total_flops())


def measure_pair(cached, full, device: torch.device, rounds: int, reps: int, warmup: int) -> dict:
    """Time the cached and the re-forward closure in alternating rounds.

    A speed-up is a ratio of two timings; on a shared machine the throughput drifts by tens of
    percent within minutes, so timing one path after the other measures the drift as much as
    the cache. Each round times ``reps`` calls of each path back to back; the speed-up is the
    median over rounds of the within-round ratio. Returns, per path, the median wall and
    process-CPU seconds per call (CPU time counts every thread: at 2 threads it is about
    twice the wall time) and the speed-up.
    """
    runs = {True: cached, False: full}
    walls: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    with torch.no_grad():
        for run in runs.values():
            for _ in range(warmup):
                run()
        for _ in range(rounds):
            for key, run in runs.items():
                w, c = [], []
                for _ in range(reps):
                    synchronize(device)
                    t0, c0 = time.perf_counter(), time.process_time()
                    run()
                    synchronize(device)
                    w.append(time.perf_counter() - t0)
                    c.append(time.process_time() - c0)
                walls[key].append(statistics.median(w))
                cpus[key].append(statistics.median(c))
    out = {key: (statistics.median(walls[key]), statistics.median(cpus[key])) for key in runs}
    out["speedup"] = statistics.median(f / c for c, f in zip(walls[True], walls[False], strict=True))
    return out


def _rows(key: dict, engine: str, timed: dict, flops: dict, num_steps: int) -> list[dict]:
    """The cached and re-forward rows of one measured pair; prints them as it goes."""
    rows = []
    for cached in (True, False):
        sec, cpu_sec = timed[cached]
        row = {
            **key,
            "engine": engine,
            "kv_cache": cached,
            "num_steps": num_steps,
            "ms_per_frame": 1e3 * sec,
            "frames_per_s": key["batch"] / sec,
            "cpu_ms_per_frame": 1e3 * cpu_sec,
            "gflops_per_frame": flops[cached] / 1e9 / key["batch"],
            "achieved_gflop_per_s": flops[cached] / 1e9 / sec,
        }
        if cached:
            row["speedup_vs_reforward"] = timed["speedup"]
        rows.append(row)
        _say(
            f"{key['preset']:10s} {key['variant']:10s} {engine:17s} N={key['batch']:<3d} ctx {key['context']:5s} "
            f"cache={'yes' if cached else 'no ':3s} {row['ms_per_frame']:9.2f} ms/frame "
            f"(cpu {row['cpu_ms_per_frame']:8.2f} ms) "
            f"{row['frames_per_s']:8.2f} frames/s {row['gflops_per_frame']:8.3f} GFLOP/frame "
            f"{row['achieved_gflop_per_s']:7.1f} GFLOP/s" + (f"  speed-up {timed['speedup']:.2f}x" if cached else "")
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/benchmark_model.json"))
    ap.add_argument("--presets", default="hma_small,hma_base")
    ap.add_argument("--variants", default="discrete,continuous")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the robot budget: 2 cores)")
    ap.add_argument("--candidates", type=int, default=8, help="N candidate action sequences")
    ap.add_argument("--num-steps", type=int, default=2, help="decoding steps M per frame")
    ap.add_argument("--reps", type=int, default=10, help="calls per path per round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of cached and re-forward calls")
    ap.add_argument("--quick", action="store_true", help="few repetitions; large presets at batch 1 only")
    ap.add_argument(
        "--compile",
        choices=("inductor", "eager"),
        help="also time both paths at 11+1 with the trunk torch.compile'd by this backend",
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows, params = [], {}
    for preset in args.presets.split(","):
        big = preset == "hma_base" and device.type == "cpu"
        for variant in args.variants.split(","):
            torch.manual_seed(0)
            model = HMA(make_config(preset, [EMBODIMENT], variant=variant)).to(device).eval()
            params[f"{preset}/{variant}"] = parameter_counts(model)
            twin = compiled_trunk(model, args.compile) if args.compile else None
            batches = (1,) if (args.quick and big) else (1, args.candidates)
            reps = 1 if big else (3 if args.quick else args.reps)
            rounds = 2 if (big or args.quick) else args.rounds
            for batch in batches:
                for context in (4, model.config.max_frames - 1):
                    key = {"preset": preset, "variant": variant, "batch": batch, "context": f"{context}+1"}
                    runs = {c: frame_fn(model, batch, context, c, args.num_steps, device) for c in (True, False)}
                    timed = measure_pair(runs[True], runs[False], device, rounds, reps, warmup=1 if big else 2)
                    flops = {c: count_flops(run) for c, run in runs.items()}
                    rows += _rows(key, "eager", timed, flops, args.num_steps)
                    if twin is not None and context == model.config.max_frames - 1:
                        _say(f"{preset} {variant} N={batch}: compiling the trunk ({args.compile}), both paths ...")
                        runs = {c: frame_fn(twin, batch, context, c, args.num_steps, device) for c in (True, False)}
                        timed = measure_pair(runs[True], runs[False], device, rounds, reps, warmup=2)
                        rows += _rows(key, f"compiled-{args.compile}", timed, flops, args.num_steps)

    def find(preset, variant, batch, context, cached, engine):
        for r in rows:
            key = (r["preset"], r["variant"], r["batch"], r["context"], r["kv_cache"], r["engine"])
            if key == (preset, variant, batch, context, cached, engine):
                return r
        return None

    targets = {}
    for engine in ("eager", *([f"compiled-{args.compile}"] if args.compile else [])):
        tag = "" if engine == "eager" else f" [{engine}]"
        for key in params:
            preset, variant = key.split("/")
            ctx = f"{make_config(preset, [EMBODIMENT]).max_frames - 1}+1"
            for batch in (1, args.candidates):
                row = find(preset, variant, batch, ctx, True, engine)
                if row:
                    speedup = row["speedup_vs_reforward"]
                    name = f"{key} cache speed-up at {ctx}, batch {batch} (>= 5x){tag}"
                    targets[name] = {"value": speedup, "ok": speedup >= 5}
        small = find("hma_small", "discrete", 1, "11+1", True, engine)
        if small:
            fps = small["frames_per_s"]
            targets[f"hma_small/discrete frames/s, batch 1, cache, M=2 (>= 20){tag}"] = {"value": fps, "ok": fps >= 20}
    for name, p in params.items():
        _say(
            f"params {name:22s} total {p['total']:>11,d} trunk {p['trunk']:>11,d} "
            f"per-embodiment {p['per_embodiment']:>10,d}"
        )
    for name, t in targets.items():
        _say(f"target {name}: {t['value']:.2f} {'OK' if t['ok'] else 'MISSED'}")

    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "quick": args.quick,
        "compile": args.compile,
        "embodiment": EMBODIMENT.to_dict(),
        "results": rows,
        "params": params,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
