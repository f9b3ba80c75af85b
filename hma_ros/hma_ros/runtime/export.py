"""Export one embodiment of an HMA checkpoint to ONNX: the per-frame trunk step (+ diffusion MLP).

    python -m hma_ros.runtime.export CHECKPOINT --embodiment franka --out DIR [--opset 17] [--check]

``step.onnx`` is the model's ``FrameStep`` (``HMA.step``: one frame through the trunk after a
temporal KV cache, plus the output heads) on a copy of the model that keeps only one
embodiment's stem, head and modulations, with a dynamic batch of N candidates:

=============  ===================  =======  ==============================================
input          shape                dtype    meaning
=============  ===================  =======  ==============================================
tokens         (N, S)               int64    discrete: the frame's token ids (masked ignored)
latents        (N, S, C)            float32  continuous: the frame's latents
token_mask     (N, S)               bool     True = masked (to predict)
prev_action    (N, A)               float32  raw action that produced this frame, NaN = unknown
cache_k/v      (L, N, S', H, P, hd) float32  committed frames' keys/values (``KVCache``)
cache_valid    (P,)                 bool     filled cache slots (right-aligned)
cache_pos      ()                   int64    absolute index of this frame (frames committed)
=============  ===================  =======  ==============================================

Outputs: ``logits_<i>`` (N, S, f_i) per vocabulary factor (discrete) or ``hidden`` (N, S, D)
(continuous), ``actions`` (N, A) the action head's read-out in raw units, ``k_new``/``v_new``
(L, N, S', H, 1, hd) this frame's keys/values (push them with ``KVCache.push`` to commit it).

``advance.onnx`` is the fused step (``FrameAdvance``, ``HMA.commit_step``): inputs
``frame_tokens`` (N, S) | ``frame_latents`` (N, S, C) and ``frame_action`` (N, A), a known
frame and the action that produced it, followed by ``step.onnx``'s inputs for the frame after
it; outputs as ``step.onnx``'s, with ``k_new``/``v_new`` those of the committed frame. A
rollout's first decoding pass of each frame runs it, the others ``step.onnx``: M graph calls
per frame instead of M + 1. Folders exported before it existed still load (the backends then
commit with a step call).

Continuous models also get ``diffusion.onnx``: the per-token noise predictor
``eps = net(x_t (M, C) float32, t (M,) int64, z (M, D) float32)``; DDIM keeps running in
``DiffusionHead.sample`` (torch), so the seeded noise and the schedule are the model's own.
Measured on hma_small (1 CPU thread, 64 tokens): the torch DDIM loop takes 309 ms per frame
step, with the MLP in ONNX Runtime 146 ms, the whole 20-step loop unrolled into one graph
128 ms; at 1024 tokens all three are within 15 % (compute bound). The unrolled graph would
buy ~12 % at batch 1 for a duplicated sampler, so the MLP alone is exported.

The files come with ``export.json``: the checkpoint id (SHA-256 of its config and weights),
embodiment, opset, the shapes above and, with ``--check``, ONNX Runtime vs torch differences.
The graphs hold no float64 tensor (TensorRT has none; rotary angles come from float32
tables, see ``hma.Rotary``). Exported with the TorchScript exporter (``dynamo=False``: the
dynamo exporter needs onnxscript, which is not installed).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hma_ros.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_model
from hma_ros.model.hma import HMA, FrameAdvance, FrameStep, KVCache

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_OPSET = 17
STEP_FILE = "step.onnx"
ADVANCE_FILE = "advance.onnx"
DIFFUSION_FILE = "diffusion.onnx"
META_FILE = "export.json"
#: Subfolder of a checkpoint where shipped exports live: ``<checkpoint>/export/<embodiment>/``.
EXPORT_SUBDIR = "export"


class ExportError(ValueError):
    """An export folder is missing, stale (another checkpoint, embodiment, opset) or corrupt."""


def checkpoint_id(folder: str | os.PathLike) -> str:
    """``hma-<16 hex>``: SHA-256 of a checkpoint's ``config.json`` and ``model.safetensors``."""
    h = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(Path(folder) / name, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return f"hma-{h.hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------
# The exported modules
# ---------------------------------------------------------------------------------------


def single_embodiment(model: HMA, embodiment: str) -> HMA:
    """A copy of ``model`` that knows only ``embodiment``: the trunk plus that robot's stem,
    action head and modulations, so the graph runs none of the other robots' modules."""
    spec = model.config.embodiment(embodiment)  # KeyError names the known ones
    sub = HMA(dataclasses.replace(model.config, embodiments=(spec,)))
    state = model.state_dict()
    sub.load_state_dict({k: state[k] for k in sub.state_dict()}, strict=True)
    p = next(model.parameters())
    return sub.to(device=p.device, dtype=p.dtype).eval()


def step_graph(model: HMA, embodiment: str) -> FrameStep:
    """The content of ``step.onnx``: the model's ``FrameStep`` on its single-embodiment copy."""
    return FrameStep(single_embodiment(model, embodiment), 0).eval()


class DiffusionNetGraph(nn.Module):
    """The continuous variant's per-token noise predictor: the content of ``diffusion.onnx``."""

    def __init__(self, model: HMA):
        super().__init__()
        self.net = model.diffusion.net

    def forward(self, x_t, t, z):
        return self.net(x_t, t, z)


class WindowForward(FrameStep):
    """The full re-forward a cache saves, as a graph: ``T`` frames (no cache) through the trunk
    and the heads of the last one. Not part of an export folder: benchmarks compare it with the
    step graph in the same engine. forward(inputs (B,T,S) ids | (B,T,S,C) latents, token_mask
    (B,T,S) bool, prev_actions (B,T,A) raw) -> (heads of frame T-1..., actions (B,A))."""

    def __init__(self, model: HMA):
        super().__init__(model, 0)

    def forward(self, inputs, token_mask, prev_actions):
        emb = self.emb.expand(inputs.shape[0])
        is_first = torch.arange(inputs.shape[1], device=inputs.device) == 0
        h, readout, _, _ = self.model._forward_frames(inputs, token_mask, prev_actions, is_first, emb)
        return self._outputs(h[:, -1], readout[:, -1], None, None, emb)[:-2]  # no keys/values


def window_signature(model: HMA) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of ``WindowForward`` over the model's whole window (max_frames)."""
    S, A, T = model.num_image_tokens, model.max_step_dim, model.config.max_frames
    step = step_signature(model)
    frame = step["inputs"][0]  # tokens (batch, S) or latents (batch, S, C): the step's frame, T of them
    first = {**frame, "shape": ["batch", T, *frame["shape"][1:]]}
    inputs = [first, _io("token_mask", ["batch", T, S], "bool"), _io("prev_actions", ["batch", T, A], "float32")]
    return {"inputs": inputs, "outputs": step["outputs"][:-2]}  # the step's heads and actions


# ---------------------------------------------------------------------------------------
# Signatures: names, shapes (with symbolic batch), dtypes
# ---------------------------------------------------------------------------------------


def _io(name: str, shape: list, dtype: str) -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype}


def step_signature(model: HMA) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of ``step.onnx`` for a single-embodiment ``model``; "batch" is dynamic."""
    c = model.config
    S, A = model.num_image_tokens, model.max_step_dim
    hd = c.dim // c.num_heads
    kv = [c.depth, "batch", model.tokens_per_frame, c.num_heads]
    if c.variant == "discrete":
        first = _io("tokens", ["batch", S], "int64")
        heads = [_io(f"logits_{i}", ["batch", S, f], "float32") for i, f in enumerate(c.vocab_factors)]
    else:
        first = _io("latents", ["batch", S, c.token_dim], "float32")
        heads = [_io("hidden", ["batch", S, c.dim], "float32")]
    inputs = [
        first,
        _io("token_mask", ["batch", S], "bool"),
        _io("prev_action", ["batch", A], "float32"),
        _io("cache_k", [*kv, c.max_frames - 1, hd], "float32"),
        _io("cache_v", [*kv, c.max_frames - 1, hd], "float32"),
        _io("cache_valid", [c.max_frames - 1], "bool"),
        _io("cache_pos", [], "int64"),
    ]
    outputs = [*heads, _io("actions", ["batch", A], "float32")]
    outputs += [_io("k_new", [*kv, 1, hd], "float32"), _io("v_new", [*kv, 1, hd], "float32")]
    return {"inputs": inputs, "outputs": outputs}


def advance_signature(model: HMA) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of ``advance.onnx``: the frame to commit and its action, then the step's."""
    step = step_signature(model)
    frame = {**step["inputs"][0], "name": "frame_" + step["inputs"][0]["name"]}  # frame_tokens | frame_latents
    return {
        "inputs": [frame, _io("frame_action", ["batch", model.max_step_dim], "float32"), *step["inputs"]],
        "outputs": step["outputs"],
    }


def diffusion_signature(model: HMA) -> dict[str, list[dict[str, Any]]]:
    c = model.config
    return {
        "inputs": [
            _io("x_t", ["batch", c.token_dim], "float32"),
            _io("t", ["batch"], "int64"),
            _io("z", ["batch", c.dim], "float32"),
        ],
        "outputs": [_io("eps", ["batch", c.token_dim], "float32")],
    }


_DTYPES = {"int64": torch.long, "float32": torch.float32, "bool": torch.bool}


def random_inputs(signature: dict, model: HMA, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Plausible random inputs for a signature: ids in range, ~half the tokens masked, one
    unknown (NaN) action, a partly filled cache; ``cache_valid`` always has empty slots first."""
    c = model.config
    out = []
    for io in signature["inputs"]:
        shape = [batch if d == "batch" else d for d in io["shape"]]
        name = io["name"]
        if name in ("tokens", "frame_tokens"):
            x = torch.randint(0, c.vocab_size, shape, generator=generator)
        elif name == "t":
            x = torch.randint(0, c.diff_train_steps, shape, generator=generator)
        elif name == "token_mask":
            x = torch.rand(shape, generator=generator) < 0.5
        elif name == "prev_actions":
            x = torch.randn(shape, generator=generator)
            x[0, 1] = float("nan")
        elif name == "cache_valid":
            x = torch.arange(shape[0]) >= shape[0] // 2
        elif name == "cache_pos":  # a long-running cache: absolute frame index far past the window
            x = torch.tensor(86_400 * 2 + 17)
        else:
            x = torch.randn(shape, generator=generator)
            if name in ("prev_action", "frame_action"):
                x[0] = float("nan")
        assert x.dtype == _DTYPES[io["dtype"]], name
        out.append(x)
    return out


# ---------------------------------------------------------------------------------------
# Export, check, cache
# ---------------------------------------------------------------------------------------


def _export_graph(module: nn.Module, signature: dict, args: list[torch.Tensor], path: Path, opset: int) -> None:
    dynamic = {}
    for io in signature["inputs"] + signature["outputs"]:
        axes = {i: "batch" for i, d in enumerate(io["shape"]) if d == "batch"}
        if axes:
            dynamic[io["name"]] = axes
    with warnings.catch_warnings():
        # The tracer warns about Python ints taken from shapes; every such shape is static
        # (layers, heads, cache slots) except the batch, which is declared dynamic above.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        torch.onnx.export(
            module,
            tuple(args),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[io["name"] for io in signature["inputs"]],
            output_names=[io["name"] for io in signature["outputs"]],
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )


def graphs_of(model: HMA) -> dict[str, tuple[str, nn.Module, dict]]:
    """name -> (file, module, signature) of every graph a single-embodiment model exports."""
    graphs = {
        "step": (STEP_FILE, FrameStep(model, 0).eval(), step_signature(model)),
        "advance": (ADVANCE_FILE, FrameAdvance(model, 0).eval(), advance_signature(model)),
    }
    if model.config.variant == "continuous":
        graphs["diffusion"] = (DIFFUSION_FILE, DiffusionNetGraph(model).eval(), diffusion_signature(model))
    return graphs


def export(
    model: HMA,
    embodiment: str,
    out: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    checkpoint: str | os.PathLike | None = None,
    check: bool = False,
) -> dict[str, Any]:
    """Export ``embodiment`` of ``model`` to ``out`` (replaced atomically); returns the metadata."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    out = Path(out)
    sub = single_embodiment(model, embodiment).cpu().float()
    c = sub.config
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "checkpoint_id": checkpoint_id(checkpoint) if checkpoint is not None else None,
        "embodiment": embodiment,
        "variant": c.variant,
        "opset": opset,
        "torch": torch.__version__,
        "model": {
            "tokens_h": c.tokens_h,
            "tokens_w": c.tokens_w,
            "num_image_tokens": sub.num_image_tokens,
            "tokens_per_frame": sub.tokens_per_frame,
            "step_action_dim": sub.max_step_dim,
            "depth": c.depth,
            "num_heads": c.num_heads,
            "head_dim": c.dim // c.num_heads,
            "cache_frames": c.max_frames - 1,
            "vocab_factors": list(c.vocab_factors) if c.variant == "discrete" else None,
            "token_dim": c.token_dim if c.variant == "continuous" else None,
        },
        "graphs": {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        g = torch.Generator().manual_seed(0)
        for name, (file, module, signature) in graphs_of(sub).items():
            with torch.no_grad():
                _export_graph(module, signature, random_inputs(signature, sub, 2, g), tmp / file, opset)
            meta["graphs"][name] = {"file": file, **signature}
        if check:
            meta["check"] = check_export(tmp, model, embodiment, meta)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; an export is shared like a checkpoint
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            shutil.rmtree(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s (%s) to %s", embodiment, c.variant, out)
    return meta


def load_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``export.json`` (format and the files it names)."""
    folder = Path(folder)
    path = folder / META_FILE
    if not path.is_file():
        raise ExportError(f"{path} not found: not an hma_ros export folder")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{path} is not valid JSON: {e}") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{path}: format_version {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    for name, graph in meta.get("graphs", {}).items():
        if not (folder / graph["file"]).is_file():
            raise ExportError(f"{folder}: graph {name!r} file {graph['file']} is missing")
    if "step" not in meta.get("graphs", {}):
        raise ExportError(f"{path} names no step graph")
    return meta


def check_export(
    folder: str | os.PathLike, model: HMA, embodiment: str, meta: dict | None = None, batches=(1, 3)
) -> dict[str, float]:
    """Max abs difference, per output, of ONNX Runtime (CPU) against the torch model on random
    inputs at several batch sizes. The torch reference is the full (multi-embodiment) model."""
    import onnxruntime as ort

    folder = Path(folder)
    meta = meta or load_meta(folder)
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    model = model.eval()
    from hma_ros.runtime.backends import session_options

    sub = single_embodiment(model, embodiment)
    ref_graphs = graphs_of(sub)
    opts = session_options(ort, torch.get_num_threads())
    diffs: dict[str, float] = {}
    g = torch.Generator().manual_seed(1)
    for name, graph in meta["graphs"].items():
        sess = ort.InferenceSession(str(folder / graph["file"]), opts, providers=["CPUExecutionProvider"])
        _, module, signature = ref_graphs[name]
        if name in ("step", "advance"):  # the full model's own graph module, this robot's index
            full = (FrameStep if name == "step" else FrameAdvance)(model, embodiment).eval()
        for batch in batches:
            args = random_inputs(signature, sub, batch, g)
            with torch.no_grad():
                if name in ("step", "advance"):
                    # Actions at the full model's (mixed-batch) width; its read-out back at this robot's.
                    wide = [
                        F.pad(a, (0, model.max_step_dim - a.shape[-1])) if io["name"].endswith("action") else a
                        for io, a in zip(signature["inputs"], args, strict=True)
                    ]
                    *heads, acts, k, v = full(*wide)
                    ref = [*heads, acts[:, : sub.max_step_dim], k, v]
                else:
                    ref = [module(*args)]
            got = sess.run(None, {io["name"]: a.numpy() for io, a in zip(signature["inputs"], args, strict=True)})
            for io, r, o in zip(signature["outputs"], ref, got, strict=True):
                key = f"{name}.{io['name']}"
                diffs[key] = max(diffs.get(key, 0.0), float((r - torch.from_numpy(o)).abs().max()))
    return diffs


def default_cache_dir() -> Path:
    """``$HMA_ROS_CACHE``, else ``$XDG_CACHE_HOME/hma_ros``, else ``~/.cache/hma_ros``."""
    env = os.environ.get("HMA_ROS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hma_ros"


def matches(meta: dict, ckpt_id: str, embodiment: str) -> bool:
    return meta.get("checkpoint_id") == ckpt_id and meta.get("embodiment") == embodiment


def ensure_export(
    checkpoint: str | os.PathLike,
    embodiment: str,
    *,
    model: HMA | None = None,
    cache_dir: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """An up-to-date export of ``checkpoint`` for ``embodiment``: the shipped one in
    ``<checkpoint>/export/<embodiment>/`` if it matches the weights, else one in the cache
    dir (``<cache>/export/<checkpoint id>/<embodiment>-opset<N>/``), exported if missing or stale."""
    checkpoint = Path(checkpoint)
    ckpt_id = checkpoint_id(checkpoint)
    shipped = checkpoint / EXPORT_SUBDIR / embodiment
    cached = Path(cache_dir or default_cache_dir()) / "export" / ckpt_id / f"{embodiment}-opset{opset}"
    for folder in (shipped, cached):
        if (folder / META_FILE).is_file():
            try:
                meta = load_meta(folder)
            except ExportError as e:
                log.warning("ignoring export %s: %s", folder, e)
                continue
            if matches(meta, ckpt_id, embodiment):
                return folder
            log.warning("ignoring stale export %s (checkpoint %s)", folder, meta.get("checkpoint_id"))
    model = model if model is not None else load_model(checkpoint)
    log.info("exporting %s / %s to %s (once; cached)", checkpoint, embodiment, cached)
    export(model, embodiment, cached, opset=opset, checkpoint=checkpoint)
    return cached


def _full_reforward_fn(run_window, sub: HMA, ctx, ctx_acts, action, num_steps: int, g: torch.Generator):
    """One frame decoded the way a cache-less rollout does it: ``num_steps`` passes of the
    whole window (the context and the frame being decoded). ``run_window(list) -> list`` runs
    ``WindowForward`` (torch or a graph); ``sub`` is the single-embodiment model (sampler)."""
    B = action.shape[0]
    inputs = ctx.flatten(2, 3).expand(B, *[-1] * (ctx.dim() - 2))  # (B, Tc, S[, C])
    # The action that produced each frame (the backends' append_frames convention).
    prev = torch.cat([ctx_acts.expand(B, -1, -1), action[:, None]], 1).contiguous()  # (B, Tc + 1, A)
    ctx_mask = torch.zeros(B, inputs.shape[1], sub.num_image_tokens, dtype=torch.bool)
    discrete = sub.config.variant == "discrete"

    def fn(x, mask):
        out = run_window([torch.cat([inputs, x[:, None]], 1), torch.cat([ctx_mask, mask[:, None]], 1), prev])
        return (out[:-1] if discrete else out[0]), out[-1]

    def frame():
        sub._sample_frame(fn, B, action.device, num_steps, 1.0, "random", g)

    return frame


def benchmark(
    model: HMA, embodiment: str, folder: str | os.PathLike, batches=(1, 16), threads=(1, 2), num_steps: int = 2
) -> list[dict[str, Any]]:
    """Milliseconds per generated frame, torch vs ONNX Runtime (CPU, export in ``folder``), with
    the KV cache and without it. Cached: commit the newest of 11 context frames and decode the
    next one in ``num_steps`` passes (``advance``: the fused step, then plain steps), as a
    rollout does. Full re-forward: ``num_steps`` passes of ``WindowForward`` over the 12-frame
    window, exported to a temporary ``window.onnx`` for the ONNX Runtime rows, so each engine's
    cache speed-up compares like with like; the two are timed in alternating rounds and the
    speed-up is the median within-round ratio (``model.benchmark.measure_pair``). Random
    weights are fine: speed does not depend on them. Process CPU time is reported beside wall
    time."""
    import onnxruntime as ort

    from hma_ros.model.benchmark import measure_pair
    from hma_ros.runtime.backends import OnnxRuntimeBackend, TorchBackend, _OrtGraph, _TorchGraph, session_options

    c, spec = model.config, model.config.embodiment(embodiment)
    sub = single_embodiment(model, embodiment)
    window, window_sig = WindowForward(sub).eval(), window_signature(sub)
    g = torch.Generator().manual_seed(0)
    scratch = tempfile.TemporaryDirectory(prefix="hma_window_")  # not part of the export folder
    window_file = Path(scratch.name) / "window.onnx"
    with torch.no_grad():
        _export_graph(window, window_sig, random_inputs(window_sig, sub, 2, g), window_file, DEFAULT_OPSET)
    shape = (1, c.max_frames - 1, c.tokens_h, c.tokens_w)
    if c.variant == "discrete":
        ctx = torch.randint(0, c.vocab_size, shape, generator=g)
    else:
        ctx = torch.randn(*shape, c.token_dim, generator=g)
    acts = torch.randn(1, c.max_frames - 1, spec.step_action_dim, generator=g)
    torch_impl = TorchBackend(sub, embodiment)  # sub has one robot: no second copy
    rows, before = [], torch.get_num_threads()
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            opts = session_options(ort, n_threads)  # the backend's own settings
            session = ort.InferenceSession(str(window_file), opts, providers=["CPUExecutionProvider"])
            impls = [torch_impl, OnnxRuntimeBackend(model, embodiment, folder, threads=n_threads)]
            windows = {
                "torch": _TorchGraph(window).run,
                "onnxruntime": _OrtGraph(session, window_sig, next(sub.parameters()).device).run,
            }
            for batch in batches:
                action = torch.randn(batch, spec.step_action_dim, generator=g)
                last = ctx[:, -1].expand(batch, *ctx.shape[2:])
                last_in = acts[:, -1].expand(batch, -1)
                for impl in impls:
                    cache = impl.append_frames(impl.init_cache(1), ctx[:, :-1], acts[:, :-1]).expand(batch)
                    # Dense per-candidate caches, as in a rollout after its first frame.
                    cache = KVCache(cache.k.contiguous(), cache.v.contiguous(), cache.valid, cache.pos)

                    def cached(impl=impl, cache=cache, action=action, last=last, last_in=last_in):
                        impl.advance(cache, last, last_in, action, num_steps, generator=g)

                    full = _full_reforward_fn(windows[impl.name], sub, ctx, acts, action, num_steps, g)
                    reps = 3 if batch == 1 else 1
                    timed = measure_pair(cached, full, torch.device("cpu"), rounds=3, reps=reps, warmup=1)
                    for mode, key in (("cached", True), ("full", False)):
                        ms, cpu_ms = (1e3 * t for t in timed[key])
                        row = {
                            "backend": impl.name,
                            "mode": mode,
                            "threads": n_threads,
                            "batch": batch,
                            "ms_per_frame": ms,
                            "cpu_ms": cpu_ms,
                        }
                        if key:
                            row["speedup_vs_reforward"] = timed["speedup"]
                        rows.append(row)
                        log.info(
                            "%-12s %-6s threads %d batch %3d: %9.1f ms/frame wall, %9.1f ms process CPU",
                            impl.name,
                            mode,
                            n_threads,
                            batch,
                            ms,
                            cpu_ms,
                        )
                    log.info("%-12s cache speed-up at batch %d: %.1fx", impl.name, batch, timed["speedup"])
    finally:
        torch.set_num_threads(before)
        scratch.cleanup()
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path, help="HMA checkpoint folder (config.json + model.safetensors)")
    ap.add_argument("--embodiment", help="which of the model's embodiments (default: its only one)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 17 (default {DEFAULT_OPSET})")
    ap.add_argument("--check", action="store_true", help="compare ONNX Runtime against torch on random inputs")
    ap.add_argument(
        "--benchmark", action="store_true", help="time torch vs ONNX Runtime per frame (M=2) -> OUT/benchmark.json"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = load_model(args.checkpoint)
    names = model.config.embodiment_names
    embodiment = args.embodiment
    if embodiment is None:
        if len(names) != 1:
            ap.error(f"the model knows several embodiments {list(names)}: pass --embodiment")
        embodiment = names[0]
    elif embodiment not in names:
        ap.error(f"unknown embodiment {embodiment!r}; the model knows {list(names)}")
    meta = export(model, embodiment, args.out, opset=args.opset, checkpoint=args.checkpoint, check=args.check)
    for name, graph in meta["graphs"].items():
        log.info("%s: %s", name, args.out / graph["file"])
    if args.check:
        worst = max(meta["check"].values())
        for key, diff in meta["check"].items():
            print(f"max abs diff {key:24s} {diff:.3e}")  # noqa: T201 (the CLI's result)
        print(f"max abs diff (all outputs) {worst:.3e}")  # noqa: T201
    if args.benchmark:
        rows = benchmark(model, embodiment, args.out)
        (args.out / "benchmark.json").write_text(json.dumps({"torch": torch.__version__, "results": rows}, indent=2))
    return meta


if __name__ == "__main__":
    main(sys.argv[1:])
