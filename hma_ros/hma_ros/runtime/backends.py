"""Inference backends of ``WorldModelRunner``: torch (eager / compiled), ONNX Runtime, TensorRT.

A backend serves ONE embodiment of one model and does the two things the runner needs:

* ``append_frames(cache, frames, actions_in)``: commit known frames into a ``KVCache``;
* ``predict_next(cache, action, num_steps, temperature, order, generator)``: decode the next
  frame in M unmasking steps (not committed) and read out the action that produced it;
* ``advance(...)``: both at once, commit frame t and predict t+1, fused into M trunk passes
  (``HMA.commit_step``; the graph backends' ``advance.onnx``) instead of M + 1.

``TorchBackend`` is the model itself. The others run the exported per-frame step
(``runtime/export.py``: ``step.onnx`` and ``advance.onnx``, and ``diffusion.onnx`` for
continuous models) and decode
with the model's own sampler: ``HMA._sample_frame`` (MaskGIT / MAR unmasking) takes the
graph as its trunk (logits per factor, or hidden tokens) and ``DiffusionHead.sample`` (DDIM)
the diffusion graph as its ``net``. Random numbers are drawn by those methods in the same order as in torch, so a
seeded generator makes the same choices wherever the logits agree (they differ by ~1e-6:
a near-tie can still flip a token, rarely). Caches stay torch tensors (``KVCache``) on the
backend's device; the graphs read and write them in place of host copies (ONNX Runtime
I/O binding, TensorRT tensor addresses).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hma_ros.model.hma import HMA, FrameAdvance, KVCache
from hma_ros.runtime.export import ensure_export, load_meta, single_embodiment, step_graph

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class BackendUnavailableError(ValueError):
    """The requested backend cannot run here (package missing, no GPU, no such provider)."""


class Backend(ABC):
    """Commit frames into a temporal KV cache and predict the next frame, for one embodiment."""

    name = "abstract"

    def __init__(self, model: HMA, embodiment: str):
        self.model = model.eval()
        self.spec = model.config.embodiment(embodiment)  # KeyError names the known ones
        self.embodiment = embodiment
        self.device = next(model.parameters()).device

    def init_cache(self, batch_size: int = 1) -> KVCache:
        """An empty cache (its shapes do not depend on the embodiment)."""
        return self.model.init_cache(batch_size, self.device)

    @abstractmethod
    def append_frames(self, cache: KVCache, frames: torch.Tensor, actions_in: torch.Tensor | None) -> KVCache:
        """Commit frames (B,T,h,w[,C]) produced by actions_in (B,T,A) raw (NaN/None = unknown)."""

    @abstractmethod
    def predict_next(
        self,
        cache: KVCache,
        action: torch.Tensor,
        num_steps: int = 2,
        temperature: float = 1.0,
        order: str = "random",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame (B,h,w[,C]) after the cache produced by action (B,A), and the action read-out (B,>=A)."""

    def advance(
        self,
        cache: KVCache,
        frame: torch.Tensor,
        action_in: torch.Tensor,
        action: torch.Tensor,
        num_steps: int = 2,
        temperature: float = 1.0,
        order: str = "random",
        generator: torch.Generator | None = None,
    ) -> tuple[KVCache, torch.Tensor, torch.Tensor]:
        """Commit ``frame`` (B,h,w[,C]) produced by ``action_in`` (B,A), then predict the frame
        that ``action`` produces: (cache, next frame, read-out). Here ``append_frames`` +
        ``predict_next`` (M + 1 trunk passes); the torch and graph backends fuse them into M
        (``HMA.advance``, ``advance.onnx``)."""
        cache = self.append_frames(cache, frame[:, None], action_in[:, None])
        nxt, actions = self.predict_next(cache, action, num_steps, temperature, order, generator)
        return cache, nxt, actions


class TorchBackend(Backend):
    """The model itself, eager: the reference every other backend is tested against.

    Actions are this embodiment's width; the model pads them for its wider robots' stems.
    """

    name = "torch"

    def __init__(self, model: HMA, embodiment: str):
        super().__init__(model, embodiment)
        if len(model.config.embodiments) > 1:
            # Only this robot's stem, head and modulations: the model runs every robot's
            # modules on each pass and keeps its own robot's (a static loop that mixed
            # training batches need), which made a cached step of the shipped five-robot
            # checkpoint 15-30% slower. The numbers are the same, bit for bit.
            self.model = single_embodiment(model, embodiment)

    def append_frames(self, cache, frames, actions_in):
        return self.model.append_frames(cache, frames, actions_in, self.embodiment)

    def predict_next(self, cache, action, num_steps=2, temperature=1.0, order="random", generator=None):
        return self.model.predict_next(cache, action, self.embodiment, num_steps, temperature, order, generator)

    def advance(self, cache, frame, action_in, action, num_steps=2, temperature=1.0, order="random", generator=None):
        return self.model.advance(
            cache, frame, action_in, action, self.embodiment, num_steps, temperature, order, generator
        )


# ---------------------------------------------------------------------------------------
# Graph backends: the exported step, decoded by the model's own sampler
# ---------------------------------------------------------------------------------------


class GraphBackend(Backend):
    """A backend that runs ``step``, ``advance`` (and ``diffusion``) graphs with the signatures of
    ``export.py``.

    Subclasses fill ``self._graphs`` with objects whose ``run(list[Tensor]) -> list[Tensor]``
    follows the graph's input and output order.
    """

    def __init__(self, model: HMA, embodiment: str):
        super().__init__(model, embodiment)
        self.step_dim = self.spec.step_action_dim
        c = model.config
        self._num_heads = len(c.vocab_factors) if c.variant == "discrete" else 1
        self._graphs: dict[str, Any] = {}

    def _step(self, inputs, token_mask, prev_action, cache: KVCache):
        out = self._graphs["step"].run([inputs, token_mask, prev_action, cache.k, cache.v, cache.valid, cache.pos])
        heads = out[: self._num_heads]
        return heads, out[self._num_heads], out[-2], out[-1]  # heads, actions (B,A), k, v (L,B,S,H,1,hd)

    def _diffusion_net(self, x_t, t, z):
        return self._graphs["diffusion"].run([x_t, t.long(), z])[0]

    def _own_cache(self, cache: KVCache, batch_size: int) -> KVCache:
        """The cache at this batch, dense (graphs need contiguous buffers; an expanded one is copied)."""
        cache = cache.expand(batch_size)
        return KVCache(cache.k.contiguous(), cache.v.contiguous(), cache.valid.contiguous(), cache.pos)

    def append_frames(self, cache, frames, actions_in):
        """One step per frame, oldest first: the same numbers as the model's one-pass commit
        while the frames fit in the cache (the model refuses more, and so does this)."""
        m = self.model
        m._check_frames(frames, "frames")
        B, T = frames.shape[:2]
        if cache.valid.shape[0] < T:
            raise ValueError(f"can append at most max_frames-1={cache.valid.shape[0]} frames at once, got {T}")
        if actions_in is None:
            actions_in = torch.full((B, T, self.step_dim), float("nan"), device=frames.device)
        m._check_actions(actions_in, "actions_in", self.step_dim, allow_nan=True)
        cache = self._own_cache(cache, B)
        inputs = frames.flatten(2, 3)  # (B, T, S[, C])
        mask = torch.zeros(B, m.num_image_tokens, dtype=torch.bool, device=frames.device)
        for t in range(T):
            _, _, k, v = self._step(inputs[:, t].contiguous(), mask, actions_in[:, t, : self.step_dim], cache)
            cache = cache.push(k, v)
        return cache

    @torch.no_grad()
    def predict_next(self, cache, action, num_steps=2, temperature=1.0, order="random", generator=None):
        return self._decode(cache, action, num_steps, temperature, order, generator)[1:]

    @torch.no_grad()
    def advance(self, cache, frame, action_in, action, num_steps=2, temperature=1.0, order="random", generator=None):
        """The model's fused commit (``HMA.advance``) with the graphs: the first decoding pass
        runs ``advance`` (commit ``frame`` + decode), the others ``step``: M calls, not M + 1.
        An export without the advance graph falls back to ``append_frames`` + ``predict_next``."""
        if "advance" not in self._graphs:
            return super().advance(cache, frame, action_in, action, num_steps, temperature, order, generator)
        self.model._check_frames(frame, "frame", with_time=False)
        self.model._check_actions(action_in[:, None], "action_in", self.step_dim, allow_nan=True)
        commit = (frame.flatten(1, 2).contiguous(), action_in[:, : self.step_dim].contiguous())
        return self._decode(cache, action, num_steps, temperature, order, generator, commit)

    def _decode(self, cache, action, num_steps, temperature, order, generator, commit=None):
        """Decode the frame that ``action`` (B,A) produces after ``cache`` with the model's
        sampler; with ``commit`` = (frame inputs (B,S[,C]), its action (B,A)), the first pass
        runs the advance graph, committing that frame first. Returns (cache the frame was
        decoded after, frame (B,h,w[,C]), action read-out (B,A))."""
        m, c = self.model, self.model.config
        m._check_sampling(num_steps, temperature, order)
        B = action.shape[0]
        m._check_actions(action[:, None], "action", self.step_dim, allow_nan=True)
        action = action[:, : self.step_dim].contiguous()
        cache = self._own_cache(cache, B)
        state = {"cache": cache if commit is None else None}

        def trunk(x, mask):
            if state["cache"] is None:  # the fused first pass: commit, then decode
                out = self._graphs["advance"].run([*commit, x, mask, action, cache.k, cache.v, cache.valid, cache.pos])
                heads, actions = out[: self._num_heads], out[self._num_heads]
                state["cache"] = cache.push(out[-2], out[-1])
            else:
                heads, actions, _, _ = self._step(x, mask, action, state["cache"])
            return (heads if c.variant == "discrete" else heads[0]), actions

        net = self._diffusion_net if c.variant == "continuous" else None
        frame, actions = m._sample_frame(
            trunk, B, action.device, num_steps, temperature, order, generator, diffusion_net=net
        )
        return state["cache"], frame.reshape(B, c.tokens_h, c.tokens_w, *frame.shape[2:]), actions


class _TorchGraph:
    """A torch callable with a graph's calling convention (compiled step, tests)."""

    def __init__(self, fn):
        self.fn = fn

    def run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.fn(*inputs)
        return list(out) if isinstance(out, (tuple, list)) else [out]


class CompiledTorchBackend(GraphBackend):
    """``torch.compile`` of the single-embodiment step (and diffusion MLP), same sampler as the graphs.

    ``compile_backend``: torch.compile's backend ("inductor" needs a C++ compiler; "eager"
    only traces, for tests). The first calls at each new batch size compile.
    """

    name = "torch"

    def __init__(self, model: HMA, embodiment: str, compile_backend: str = "inductor", mode: str | None = None):
        super().__init__(model, embodiment)
        step = step_graph(model, embodiment)
        opts = {"backend": compile_backend, "dynamic": True, **({"mode": mode} if mode else {})}
        self._graphs["step"] = _TorchGraph(torch.compile(step, **opts))
        self._graphs["advance"] = _TorchGraph(torch.compile(FrameAdvance(step.model, 0).eval(), **opts))
        if model.config.variant == "continuous":
            self._graphs["diffusion"] = _TorchGraph(torch.compile(step.model.diffusion.net, **opts))


def _resolve(shape: list, batch: int) -> tuple[int, ...]:
    return tuple(batch if d == "batch" else int(d) for d in shape)


def _batch_of(signature: dict, inputs: list[torch.Tensor]) -> int:
    for io, x in zip(signature["inputs"], inputs, strict=True):
        if "batch" in io["shape"]:
            return x.shape[io["shape"].index("batch")]
    raise ValueError("graph has no batch axis")


_NP = {"int64": np.int64, "float32": np.float32, "bool": np.bool_}
_TORCH = {"int64": torch.long, "float32": torch.float32, "bool": torch.bool}


class _OrtGraph:
    """One ONNX Runtime session run on torch tensors through I/O binding (no host copies)."""

    def __init__(self, session, signature: dict, device: torch.device):
        self.session, self.signature, self.device = session, signature, device
        self._dev = ("cuda", device.index or 0) if device.type == "cuda" else ("cpu", 0)

    def run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        sig = self.signature
        batch = _batch_of(sig, inputs)
        io = self.session.io_binding()
        keep = []
        for spec, x in zip(sig["inputs"], inputs, strict=True):
            x = x.to(self.device, _TORCH[spec["dtype"]]).contiguous()
            keep.append(x)
            io.bind_input(spec["name"], *self._dev, _NP[spec["dtype"]], tuple(x.shape), x.data_ptr())
        outs = []
        for spec in sig["outputs"]:
            o = torch.empty(_resolve(spec["shape"], batch), dtype=_TORCH[spec["dtype"]], device=self.device)
            outs.append(o)
            io.bind_output(spec["name"], *self._dev, _NP[spec["dtype"]], tuple(o.shape), o.data_ptr())
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch's stream
        self.session.run_with_iobinding(io)
        io.synchronize_outputs()
        return outs


def session_options(ort, threads: int):
    """ONNX Runtime session options for ``threads`` intra-op threads, without spin-waiting.

    ORT's CPU workers spin between ops by default. Beside torch's threads (the sampler runs
    between graph calls) on a small machine they take the cores the work needs: on 2 cores,
    a cached frame of the shipped franka model (batch 1) took 61 ms with 2 spinning threads,
    23 ms with 2 threads that sleep, 27 ms with 1 thread.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxRuntimeBackend(GraphBackend):
    """The exported graphs in ONNX Runtime: CPU EP, or CUDA EP when the model is on a GPU.

    ``threads``: intra-op threads (default: torch's, so both backends get the same budget).
    """

    name = "onnxruntime"

    def __init__(self, model: HMA, embodiment: str, export_dir: str | os.PathLike, threads: int | None = None):
        super().__init__(model, embodiment)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(f"backend 'onnxruntime' needs the onnxruntime package: {e}") from e
        meta = _checked_meta(export_dir, model, embodiment)
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    f"the model is on {self.device} but this onnxruntime has no CUDAExecutionProvider "
                    f"({ort.get_available_providers()}); install onnxruntime-gpu or run on CPU"
                )
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        else:
            providers = ["CPUExecutionProvider"]
        opts = session_options(ort, threads or torch.get_num_threads())
        for name, graph in meta["graphs"].items():
            session = ort.InferenceSession(str(Path(export_dir) / graph["file"]), opts, providers=providers)
            self._graphs[name] = _OrtGraph(session, graph, self.device)
        self.export_dir = Path(export_dir)
        log.info("onnxruntime backend: %s on %s", self.export_dir, session.get_providers()[0])


def _checked_meta(export_dir, model: HMA, embodiment: str) -> dict:
    meta = load_meta(export_dir)
    if meta["embodiment"] != embodiment or meta["variant"] != model.config.variant:
        raise ValueError(
            f"export {export_dir} is {meta['embodiment']!r} ({meta['variant']}), "
            f"wanted {embodiment!r} ({model.config.variant})"
        )
    return meta


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:N") checked against this machine, or a
    ``BackendUnavailableError`` (no such GPU) / ``ValueError`` (not a device) saying why."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not one of cpu, cuda, cuda:N ({e})") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"device {device!r} is not one of cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device {device!r} needs a CUDA GPU visible to torch, and there is none "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use device 'cpu'"
        )
    count = torch.cuda.device_count()
    if (dev.index or 0) >= count:
        raise BackendUnavailableError(f"device {device!r}: torch sees {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    return dev


# ---------------------------------------------------------------------------------------
# TensorRT
# ---------------------------------------------------------------------------------------


def import_tensorrt():
    """``tensorrt`` and a CUDA device, or a ``BackendUnavailableError`` saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as e:  # the PyPI wheels are download stubs where NVIDIA's index is unreachable
        raise BackendUnavailableError(
            f"backend 'tensorrt' needs NVIDIA TensorRT (Python package 'tensorrt', 10.x) and a CUDA GPU; "
            f"'import tensorrt' failed here ({e}). Install TensorRT on a GPU machine, or use "
            f"backend 'onnxruntime' (CPU/CUDA) or 'torch'."
        ) from e
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "backend 'tensorrt' needs a CUDA GPU visible to torch (torch.cuda.is_available() is False); "
            "use backend 'onnxruntime' or 'torch' on this machine"
        )
    return trt


class _TrtGraph:
    """One TensorRT engine run on torch CUDA tensors (tensor addresses, torch's current stream)."""

    def __init__(self, engine, signature: dict, device: torch.device):
        self.engine, self.signature, self.device = engine, signature, device
        self.context = engine.create_execution_context()

    def run(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        sig, ctx = self.signature, self.context
        batch = _batch_of(sig, inputs)
        keep = []
        for spec, x in zip(sig["inputs"], inputs, strict=True):
            x = x.to(self.device, _TORCH[spec["dtype"]]).contiguous()
            keep.append(x)
            ctx.set_input_shape(spec["name"], tuple(x.shape))
            ctx.set_tensor_address(spec["name"], x.data_ptr())
        outs = []
        for spec in sig["outputs"]:
            o = torch.empty(_resolve(spec["shape"], batch), dtype=_TORCH[spec["dtype"]], device=self.device)
            outs.append(o)
            ctx.set_tensor_address(spec["name"], o.data_ptr())
        if not ctx.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log above)")
        return outs  # ordered on torch's stream: later torch ops see the results


def build_engine(
    trt, onnx_path: Path, signature: dict, batch_scale: int, max_batch: int, opt_batch: int, fp16: bool
) -> bytes:
    """Serialised engine for ``onnx_path`` with one optimisation profile over the batch axis:
    1 .. ``max_batch`` candidates (times ``batch_scale`` rows: tokens for the diffusion MLP, which
    a decoding step runs for the tokens it reveals only, so its rows start at 1)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for spec in signature["inputs"]:
        if "batch" in spec["shape"]:  # the other inputs have static shapes
            shapes = [_resolve(spec["shape"], n) for n in (1, opt_batch * batch_scale, max_batch * batch_scale)]
            profile.set_shape(spec["name"], *shapes)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    return bytes(engine)


class TensorRTBackend(GraphBackend):
    """The exported graphs as TensorRT engines, built once and cached next to the ONNX files
    (``<graph>.<fp16|fp32>.b<max_batch>.trt<version>.sm<cc>.engine``; rebuilt when any of those
    change). ``max_batch``: most candidates per call; ``opt_batch``: the size tuned for."""

    name = "tensorrt"

    def __init__(
        self,
        model: HMA,
        embodiment: str,
        export_dir: str | os.PathLike,
        fp16: bool = False,
        max_batch: int = 64,
        opt_batch: int | None = None,
    ):
        trt = import_tensorrt()
        if next(model.parameters()).device.type != "cuda":
            model = model.to("cuda")
        super().__init__(model, embodiment)
        meta = _checked_meta(export_dir, model, embodiment)
        opt_batch = opt_batch or min(16, max_batch)
        if not 1 <= opt_batch <= max_batch:
            raise ValueError(f"need 1 <= opt_batch <= max_batch, got {opt_batch}, {max_batch}")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        cc = "".join(map(str, torch.cuda.get_device_capability(self.device)))
        for name, graph in meta["graphs"].items():
            onnx_path = Path(export_dir) / graph["file"]
            tag = f"{'fp16' if fp16 else 'fp32'}.b{max_batch}.trt{trt.__version__}.sm{cc}"
            cache = onnx_path.with_name(f"{onnx_path.stem}.{tag}.engine")
            if cache.is_file():
                blob = cache.read_bytes()
            else:
                scale = model.num_image_tokens if name == "diffusion" else 1
                log.info("building TensorRT engine %s (minutes)", cache.name)
                blob = build_engine(trt, onnx_path, graph, scale, max_batch, opt_batch, fp16)
                try:
                    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
                    tmp.write_bytes(blob)
                    tmp.rename(cache)
                except OSError as e:
                    log.warning("cannot cache the TensorRT engine at %s: %s", cache, e)
            engine = runtime.deserialize_cuda_engine(blob)
            if engine is None:
                raise RuntimeError(f"TensorRT cannot load engine {cache}; delete it to rebuild")
            self._graphs[name] = _TrtGraph(engine, graph, self.device)
        self.export_dir = Path(export_dir)


# ---------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------


def create_backend(
    name: str,
    model: HMA,
    embodiment: str,
    checkpoint: str | os.PathLike | None = None,
    *,
    export_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> Backend:
    """Backend ``name`` for ``model``/``embodiment``.

    Graph backends use ``export_dir`` if given, else the checkpoint's export (shipped in
    ``<checkpoint>/export/<embodiment>/`` or cached in ``cache_dir``, made once if missing).
    ``device`` moves the model first ("cuda": ONNX Runtime's CUDA EP). ``options`` go to the
    backend's constructor (torch: ``compile``, ``compile_backend``; onnxruntime: ``threads``;
    tensorrt: ``fp16``, ``max_batch``, ``opt_batch``).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "tensorrt":
        import_tensorrt()  # fail before exporting anything
        device = device or "cuda"
    if device is not None:
        model = model.to(resolve_device(device))
    if name == "torch":
        if options.pop("compile", False):
            return CompiledTorchBackend(model, embodiment, **options)
        if options:
            raise TypeError(f"unexpected options for the torch backend: {sorted(options)}")
        return TorchBackend(model, embodiment)
    if export_dir is None:
        if checkpoint is None:
            raise ValueError(f"backend {name!r} needs a checkpoint folder or an export_dir")
        export_dir = ensure_export(checkpoint, embodiment, model=model, cache_dir=cache_dir)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(model, embodiment, export_dir, **options)
    return TensorRTBackend(model, embodiment, export_dir, **options)
