"""WorldModelRunner: the ROS-free core that the world_model node (and scripts) drive.

It owns a checkpoint (HMA model + its tokenizer), the live context as a temporal KV cache
(so each observed frame costs one frame of compute, not a re-forward of the window), and
answers two questions:

* ``predict(horizon)``: what happens next if the robot keeps doing what it does? Future
  actions are unknown, so the model runs in the paper's *full dynamics* setting: action slots
  are masked, frames and actions are predicted jointly.
* ``rollout(candidate_actions, ...)``: what would each of N candidate action sequences do?
  The N candidates share one context cache (expanded, not copied); with a goal image each
  candidate gets a cost, as an MPC loop or policy monitor needs.

Every input is validated; a bad one raises ``ValueError`` naming the problem and leaves the
live context untouched. An output that is not finite raises :class:`NonFiniteOutputError` and is
never returned.

A rollout can also run one predicted frame at a time (:meth:`WorldModelRunner.start_rollout`
returns a :class:`RolloutJob`): the node's model worker interleaves live predictions between
the frames of a long rollout, so neither starves the other.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hma_ros.model.checkpoint import load_extra, load_model
from hma_ros.model.config import MODEL_HZ, EmbodimentSpec
from hma_ros.model.hma import HMA, KVCache
from hma_ros.runtime.backends import BACKENDS, Backend, TorchBackend, create_backend, import_tensorrt
from hma_ros.runtime.image import fit_image
from hma_ros.tokenizers import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

#: Subfolder of a checkpoint that holds the tokenizer the model was trained on.
TOKENIZER_SUBDIR = "tokenizer"
STEP_PERIOD = 1.0 / MODEL_HZ


@dataclass(frozen=True)
class Prediction:
    """``frames`` (H, h, w, 3) uint8; ``actions`` (H, stride * action_dim) raw, the model's
    estimate of the actions producing each frame; ``stamps`` (H,) seconds they predict."""

    frames: np.ndarray
    actions: np.ndarray
    stamps: np.ndarray


@dataclass(frozen=True)
class RolloutResult:
    """``frames`` (N, H, h, w, 3) uint8 or None; ``actions`` (N, H, A) raw read-outs of the
    action head; ``costs`` (N,) mean squared pixel error (in [0, 1] units) of each candidate's
    last frame against the goal, or None without a goal."""

    frames: np.ndarray | None
    actions: np.ndarray
    costs: np.ndarray | None


class NonFiniteOutputError(RuntimeError):
    """The model produced NaN or inf (an action read-out or a continuous latent): the output is
    meaningless, and a live context that produced it should be restarted."""


def _check_finite(x: torch.Tensor, what: str) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NonFiniteOutputError(f"the model produced non-finite {what}")


class RolloutJob:
    """A rollout in progress: :meth:`step` predicts the next frame of every candidate.

    Made by :meth:`WorldModelRunner.start_rollout`; holds its own reference to the context
    cache, so the live context may move on while it runs. Each predicted frame is committed
    inside the first decoding pass of the next one (``Backend.advance``): M trunk passes per
    frame instead of M + 1. Committing draws no random numbers, so a seed makes the same
    choices as predict + append would (up to float rounding of the fused pass).
    """

    def __init__(
        self, backend: Backend, cache: KVCache, actions: torch.Tensor, sampling: tuple, action_width: int
    ) -> None:
        self._backend, self._cache, self._actions = backend, cache, actions
        self._sampling, self._width = sampling, action_width
        self._frames: list[torch.Tensor] = []
        self._reads: list[torch.Tensor] = []

    @property
    def num_candidates(self) -> int:
        return int(self._actions.shape[0])

    @property
    def horizon(self) -> int:
        return int(self._actions.shape[1])

    @property
    def frames_done(self) -> int:
        return len(self._frames)

    @property
    def done(self) -> bool:
        return len(self._frames) == self.horizon

    def step(self) -> bool:
        """Predict the next frame of all candidates; True once the horizon is reached.
        Raises :class:`NonFiniteOutputError` (the job is then unusable)."""
        if self.done:
            return True
        t, N, backend = len(self._frames), self.num_candidates, self._backend
        if t == 0:
            frame, read = backend.predict_next(self._cache.expand(N), self._actions[:, 0], *self._sampling)
        else:
            self._cache, frame, read = backend.advance(
                self._cache.expand(N), self._frames[-1], self._actions[:, t - 1], self._actions[:, t], *self._sampling
            )
        read = read[:, : self._width]
        _check_finite(read, "actions")
        _check_finite(frame, "latents")
        self._frames.append(frame)
        self._reads.append(read)
        return self.done

    def run(self) -> RolloutJob:
        """Step to the end; returns self."""
        while not self.step():
            pass
        return self

    @property
    def tokens(self) -> torch.Tensor:
        """(N, H, h, w[, C]) once done."""
        if not self.done:
            raise RuntimeError(f"rollout at frame {self.frames_done} of {self.horizon}: not done")
        return torch.stack(self._frames, 1)

    @property
    def actions(self) -> torch.Tensor:
        """(N, H, A) action read-outs once done."""
        if not self.done:
            raise RuntimeError(f"rollout at frame {self.frames_done} of {self.horizon}: not done")
        return torch.stack(self._reads, 1)


def load_checkpoint_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer a checkpoint's tokens come from.

    Either the checkpoint's own ``tokenizer/`` subfolder, or the folder its ``extra.json``
    records (``{"tokenizer": {"folder": ..., "id": ...}}``, as training writes it; a relative
    folder is relative to the checkpoint, so shipped models can share one tokenizer). A
    recorded id must match the loaded tokenizer's.
    """
    folder = Path(folder)
    if (folder / TOKENIZER_SUBDIR).is_dir():
        return load_tokenizer(folder / TOKENIZER_SUBDIR)
    recorded = (load_extra(folder) or {}).get("tokenizer") or {}
    if not recorded.get("folder"):
        raise FileNotFoundError(
            f"{folder} has no {TOKENIZER_SUBDIR}/ folder and its extra.json names no tokenizer: "
            "the model's tokenizer is missing"
        )
    tok_dir = Path(recorded["folder"]).expanduser()
    tokenizer = load_tokenizer(tok_dir if tok_dir.is_absolute() else folder / tok_dir)
    if recorded.get("id") and tokenizer.tokenizer_id != recorded["id"]:
        raise ValueError(
            f"{folder} was trained with tokenizer {recorded['id']}, but {tok_dir} holds {tokenizer.tokenizer_id}"
        )
    return tokenizer


def check_compatible(model: HMA, tokenizer: Tokenizer) -> None:
    """Raise ValueError if ``tokenizer`` cannot feed ``model``."""
    c = model.config
    if tuple(tokenizer.grid) != (c.tokens_h, c.tokens_w):
        raise ValueError(f"tokenizer grid {tokenizer.grid} != model token grid {(c.tokens_h, c.tokens_w)}")
    if c.variant == "discrete":
        if tokenizer.kind != "discrete" or tuple(tokenizer.vocab_factors) != c.vocab_factors:
            got = getattr(tokenizer, "vocab_factors", None) if tokenizer.kind == "discrete" else tokenizer.kind
            raise ValueError(
                f"discrete model with vocab_factors {c.vocab_factors} needs a matching tokenizer, got {got}"
            )
    elif tokenizer.kind != "continuous" or tokenizer.token_dim != c.token_dim:
        got = tokenizer.token_dim if tokenizer.kind == "continuous" else tokenizer.kind
        raise ValueError(f"continuous model with token_dim {c.token_dim} needs a matching tokenizer, got {got}")


class WorldModelRunner:
    """Live context + prediction for one embodiment of one model.

    Args:
        model: an ``HMA`` in eval mode.
        tokenizer: the tokenizer its tokens come from.
        embodiment: which of the model's embodiments this robot is.
        min_context: frames observed before ``ready`` (and ``predict``) become true.
        num_steps, temperature, order: decoding defaults (MaskGIT: M=2 suffices).
        seed: seed of the sampler used by ``predict`` (reproducible live predictions).
        model_id: identifier published with predictions.
        backend: what runs the model (``runtime/backends.py``); default the model itself in torch.
    """

    def __init__(
        self,
        model: HMA,
        tokenizer: Tokenizer,
        embodiment: str,
        *,
        min_context: int = 1,
        num_steps: int = 2,
        temperature: float = 1.0,
        order: str = "random",
        seed: int = 0,
        model_id: str = "",
        backend: Backend | None = None,
    ) -> None:
        check_compatible(model, tokenizer)
        self.model = model.eval()
        self.tokenizer = tokenizer.eval()
        self.spec: EmbodimentSpec = model.config.embodiment(embodiment)  # KeyError names the known ones
        if not 1 <= min_context <= model.config.max_frames - 1:
            raise ValueError(f"min_context must be in [1, {model.config.max_frames - 1}], got {min_context}")
        self.min_context = int(min_context)
        self.num_steps, self.temperature, self.order = int(num_steps), float(temperature), order
        self.model_id = model_id
        self.backend = backend if backend is not None else TorchBackend(model, embodiment)
        if self.backend.embodiment != self.spec.name:
            raise ValueError(f"backend serves {self.backend.embodiment!r}, the runner is for {self.spec.name!r}")
        self.device = self.backend.device
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(seed))
        self.reset()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        folder: str | Path,
        robot: Any = None,
        backend: str = "torch",
        backend_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> WorldModelRunner:
        """Load ``folder`` (``config.json`` + ``model.safetensors`` + ``tokenizer/``).

        ``robot``: a ``RobotConfig`` (its embodiment, action dim and rate are checked against
        the model), an embodiment name, or None for a single-embodiment model.
        ``backend``: one of ``BACKENDS``; "onnxruntime" and "tensorrt" run the checkpoint's ONNX
        export (exported once into a cache if it does not ship one), ``backend_options`` go to
        ``runtime.backends.create_backend`` (e.g. ``cache_dir``, ``threads``, ``fp16``).
        """
        folder = Path(folder)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if backend == "tensorrt":
            import_tensorrt()  # a clear error before any loading or exporting
        if not folder.is_dir():
            raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
        model = load_model(folder)
        tokenizer = load_checkpoint_tokenizer(folder)
        names = model.config.embodiment_names
        if robot is None:
            if len(names) != 1:
                raise ValueError(f"model knows several embodiments {list(names)}: say which robot this is")
            embodiment = names[0]
        elif isinstance(robot, str):
            embodiment = robot
        else:
            embodiment = robot.embodiment
            if embodiment not in names:
                raise ValueError(
                    f"robot {robot.robot!r} is embodiment {embodiment!r}, unknown to {folder} ({list(names)})"
                )
            spec = model.config.embodiment(embodiment)
            if (robot.action_dim, robot.stride) != (spec.action_dim, spec.stride):
                raise ValueError(
                    f"robot {robot.robot!r} has {robot.action_dim} action dims at {robot.control_hz:g} Hz, but the "
                    f"model's {embodiment!r} has {spec.action_dim} at {spec.control_hz:g} Hz"
                )
        kwargs.setdefault("model_id", folder.name)
        impl = create_backend(backend, model, embodiment, folder, **(backend_options or {}))
        log.info("loaded %s (%s, embodiment %s) on %s", folder, model.config.variant, embodiment, impl.name)
        return cls(model, tokenizer.to(impl.device), embodiment, backend=impl, **kwargs)

    # -- properties -----------------------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.tokenizer.image_size)

    @property
    def step_action_dim(self) -> int:
        return self.spec.step_action_dim

    @property
    def num_context(self) -> int:
        """Frames in the live context (at most max_frames - 1: older ones slide out)."""
        return self._num_context

    @property
    def ready(self) -> bool:
        return self._num_context >= self.min_context

    # -- live context -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the live context."""
        self._cache: KVCache | None = None
        self._num_context = 0
        self._last_stamp: float | None = None

    def observe(self, frame: np.ndarray, action_before: np.ndarray | None, stamp: float) -> None:
        """Add a 2 Hz step to the live context.

        ``frame``: uint8 (H, W, 3), any size (fitted to the model's resolution).
        ``action_before``: the (stride * action_dim,) raw actions executed since the previous
        observed frame, or None to start a new context with this frame.
        """
        frame = self._fit(frame, "frame")
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite, got {stamp}")
        if self._last_stamp is not None and stamp <= self._last_stamp and action_before is not None:
            raise ValueError(f"stamp {stamp:.3f} is not after the previous frame's {self._last_stamp:.3f}")
        if action_before is not None:
            action_before = self._check_actions(np.asarray(action_before)[None, None], "action_before")[0, 0]
        if action_before is None or self._cache is None:
            self.reset()
            action_before = torch.full((self.step_action_dim,), float("nan"))
        tokens = self.tokenizer.encode(frame[None, None]).to(self.device)  # (1, 1, h, w[, C])
        self._cache = self.backend.append_frames(
            self._cache if self._cache is not None else self.backend.init_cache(1),
            tokens,
            action_before.reshape(1, 1, -1).to(self.device),
        )
        self._num_context = min(self._num_context + 1, self.model.config.max_frames - 1)
        self._last_stamp = float(stamp)

    # -- inference --------------------------------------------------------------------------
    def predict(self, horizon: int) -> Prediction:
        """Predict ``horizon`` 2 Hz steps after the live context (full dynamics)."""
        if not self.ready:
            raise ValueError(f"not ready: {self._num_context} context frames, need {self.min_context}")
        self._check_horizon(horizon)
        unknown = torch.full((1, horizon, self.step_action_dim), float("nan"), device=self.device)
        job = self._job(self._cache, unknown, self.num_steps, self._generator).run()
        frames = self.tokenizer.decode(job.tokens[0]).cpu().numpy()
        stamps = self._last_stamp + STEP_PERIOD * np.arange(1, horizon + 1)
        return Prediction(frames=frames, actions=job.actions[0].cpu().numpy(), stamps=stamps)

    def rollout(
        self,
        candidate_actions: np.ndarray,
        context: tuple[np.ndarray, np.ndarray] | None = None,
        goal: np.ndarray | None = None,
        num_steps: int | None = None,
        seed: int | None = None,
        return_frames: bool = True,
    ) -> RolloutResult:
        """Predict what each of N candidate action sequences would do.

        ``candidate_actions`` (N, H, stride * action_dim) raw: step h is executed between
        predicted frame h-1 (the newest context frame for h = 0) and predicted frame h.
        ``context``: None for the live context, or (frames (T, H, W, 3) uint8, actions
        (T, stride * action_dim)) where actions[t] was executed between context frames t and
        t+1 (the last row is superseded by the candidates' first step and ignored).
        ``goal``: uint8 (H, W, 3) image; each candidate's cost is the mean squared error of
        its last predicted frame against it. The live context is never modified.
        """
        goal_img = None if goal is None else self._fit(goal, "goal")
        job = self.start_rollout(candidate_actions, context, num_steps, seed).run()
        return self.finish_rollout(job, goal=goal_img, return_frames=return_frames)

    def start_rollout(
        self,
        candidate_actions: np.ndarray,
        context: tuple[np.ndarray, np.ndarray] | KVCache | None = None,
        num_steps: int | None = None,
        seed: int | None = None,
    ) -> RolloutJob:
        """Validate a rollout and return it unstarted; :meth:`RolloutJob.step` runs it a frame at a
        time, :meth:`finish_rollout` decodes it. Arguments as for :meth:`rollout`; ``context`` may
        also be a cache from :meth:`context_cache` (one context serving several jobs)."""
        cand = self._check_actions(candidate_actions, "candidate_actions", ndim=3)
        if cand.shape[0] < 1:
            raise ValueError("candidate_actions holds no candidate")
        self._check_horizon(cand.shape[1])
        steps = self.num_steps if num_steps is None else int(num_steps)
        if context is None:
            if not self.ready:
                raise ValueError(f"no live context yet ({self._num_context} frames, need {self.min_context})")
            cache = self._cache
        elif isinstance(context, KVCache):
            cache = context
        else:
            cache = self.context_cache(*context)
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        return self._job(cache, cand.to(self.device), steps, generator)

    def finish_rollout(
        self,
        job: RolloutJob,
        rows: slice = slice(None),
        goal: np.ndarray | None = None,
        return_frames: bool = True,
    ) -> RolloutResult:
        """Decode the candidates ``rows`` of a finished ``job`` (a batched job serves several
        requests); ``goal`` (H, W, 3) uint8 at any size adds costs."""
        goal_img = None if goal is None else self._fit(goal, "goal")
        actions = job.actions[rows]
        frames = costs = None
        if return_frames or goal_img is not None:
            decoded = self.tokenizer.decode(job.tokens[rows])  # (N, H, h, w, 3)
            if goal_img is not None:
                last = decoded[:, -1].float() / 255.0
                target = torch.from_numpy(goal_img).to(last.device).float() / 255.0
                costs = ((last - target) ** 2).mean(dim=(1, 2, 3)).cpu().numpy()
            if return_frames:
                frames = decoded.cpu().numpy()
        return RolloutResult(frames=frames, actions=actions.cpu().numpy(), costs=costs)

    def context_cache(self, frames: np.ndarray, actions: np.ndarray) -> KVCache:
        """The cache of an explicit context (frames (T, H, W, 3) uint8, actions (T, stride *
        action_dim)), as :meth:`rollout` takes it; ValueError names a bad input."""
        frames = self._fit(frames, "context frames", batched=True)
        T = frames.shape[0]
        acts = self._check_actions(np.asarray(actions)[None], "context actions", ndim=3)[0]
        if acts.shape[0] != T:
            raise ValueError(f"context has {T} frames but {acts.shape[0]} action rows")
        W = self.model.config.max_frames - 1
        frames, acts = frames[-W:], acts[-W:]
        before = torch.cat([torch.full_like(acts[:1], float("nan")), acts[:-1]])  # action producing each frame
        tokens = self.tokenizer.encode(frames[None]).to(self.device)
        return self.backend.append_frames(self.backend.init_cache(1), tokens, before[None].to(self.device))

    # -- internals --------------------------------------------------------------------------
    def _job(self, cache: KVCache, actions: torch.Tensor, num_steps: int, generator: torch.Generator) -> RolloutJob:
        """Frame-by-frame generation after ``cache`` for actions (N, H, A) (NaN = unknown)."""
        sampling = (num_steps, self.temperature, self.order, generator)
        return RolloutJob(self.backend, cache, actions, sampling, actions.shape[-1])

    def _fit(self, img: Any, what: str, batched: bool = False) -> np.ndarray:
        img = np.asarray(img)
        want = 4 if batched else 3
        if img.dtype != np.uint8 or img.ndim != want or img.shape[-1] != 3 or min(img.shape) < 1:
            shape = "(T, H, W, 3)" if batched else "(H, W, 3)"
            raise ValueError(f"{what} must be a uint8 RGB image {shape}, got {img.dtype} {img.shape}")
        return fit_image(img, self.image_size)

    def _check_actions(self, a: Any, what: str, ndim: int = 3) -> torch.Tensor:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != ndim or a.shape[-1] != self.step_action_dim:
            raise ValueError(
                f"{what} must have shape (..., {self.step_action_dim}) = stride {self.spec.stride} x action_dim "
                f"{self.spec.action_dim} for {self.spec.name!r}, got {a.shape}"
            )
        if not np.isfinite(a).all():
            raise ValueError(f"{what} contains NaN or inf")
        return torch.from_numpy(a)

    def _check_horizon(self, horizon: int) -> None:
        if not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
