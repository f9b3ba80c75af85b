"""Validate what comes in from the outside: rollout requests and raw actions, without ROS.

The world model node hands a ``hma_ros_interfaces/srv/Rollout`` request to
:func:`parse_rollout_request` as it is (any object with the request's fields works: the
function reads attributes, never imports a message type) and gets back a
:class:`RolloutRequest` of numpy arrays that the model worker can run, or a ``ValueError``
whose text the node returns to the caller unchanged. Images go through the one codec,
:func:`hma_ros.runtime.image.decode_image`.

:class:`ActionBounds` refuses actions far outside what the robot was recorded doing (joint
commands of 1e30, a candidate of 1e10): the model was never trained there, its output is
meaningless, and a NaN it produces would poison the live context for the rest of the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hma_ros.runtime.image import ImageFormatError, decode_image

#: The "recorded range" of an action dimension, from a checkpoint's z-score statistics:
#: mean +- RANGE_SIGMAS standard deviations (the bundled franka recording stays within 2).
RANGE_SIGMAS = 3.0
#: Largest number of unmasking steps a request may ask for (MaskGIT needs 2).
MAX_NUM_STEPS = 64


@dataclass(frozen=True)
class ActionBounds:
    """Per-dimension limits of raw actions: ``factor`` times the recorded range around its centre.

    ``low``/``high`` (action_dim,); ``names`` label the dimensions in messages.
    """

    low: np.ndarray
    high: np.ndarray
    names: tuple[str, ...]
    factor: float

    @classmethod
    def from_stats(
        cls, mean: Sequence[float], std: Sequence[float], factor: float, names: Sequence[str] = ()
    ) -> ActionBounds:
        """Limits ``mean +- factor * RANGE_SIGMAS * std`` from a checkpoint's action statistics."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"action range factor must be a positive number, got {factor}")
        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        half = factor * RANGE_SIGMAS * std
        names = tuple(names) or tuple(f"dim {i}" for i in range(mean.size))
        return cls(low=mean - half, high=mean + half, names=names, factor=float(factor))

    def problem(self, actions: np.ndarray, what: str) -> str | None:
        """Why ``actions`` (..., action_dim) cannot be used (the first offending value), or None."""
        a = np.asarray(actions, np.float64)
        bad = ~np.isfinite(a) | (a < self.low) | (a > self.high)
        if not bad.any():
            return None
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        d = index[-1]
        where = f"{what}[{', '.join(map(str, index))}]" if a.ndim > 1 else what
        return (
            f"{where} ({self.names[d]}) = {a[index]:.6g} is outside [{self.low[d]:.4g}, {self.high[d]:.4g}] "
            f"({self.factor:g} x the recorded range of the model's training data; parameter action_range_factor)"
        )


@dataclass(frozen=True)
class RolloutLimits:
    """What one request may ask for (the node's parameters)."""

    max_candidates: int
    max_horizon: int
    default_num_steps: int = 2


@dataclass(frozen=True)
class RolloutRequest:
    """A validated rollout request, in the runner's units.

    ``candidate_actions`` (N, H, stride * action_dim) float32; ``context`` None (the live
    context) or (frames (T, h, w, 3) uint8 at the model's size, actions (T, stride *
    action_dim)); ``context_stamp``: the newest context frame's stamp (None: live);
    ``goal`` (h, w, 3) uint8 or None; ``seed`` None = fresh randomness.
    """

    candidate_actions: np.ndarray
    context: tuple[np.ndarray, np.ndarray] | None = None
    context_stamp: float | None = None
    goal: np.ndarray | None = None
    num_steps: int = 2
    seed: int | None = None
    return_frames: bool = True

    @property
    def num_candidates(self) -> int:
        return int(self.candidate_actions.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.candidate_actions.shape[1])

    @property
    def batch_key(self) -> tuple[int, int] | None:
        """Requests with equal keys can share one batched model call: the live context, the same
        horizon and decoding steps, no seed (a seed's draws would depend on the batch). None:
        this request runs alone."""
        if self.context is not None or self.seed is not None:
            return None
        return (self.horizon, self.num_steps)


def _stamp(msg: Any) -> float:
    stamp = msg.header.stamp
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def _image(msg: Any, size: tuple[int, int], what: str) -> np.ndarray:
    try:
        return decode_image(msg, size)
    except ImageFormatError as e:
        raise ValueError(f"{what}: {e}") from e


def parse_rollout_request(
    req: Any,
    *,
    robot_name: str,
    action_dim: int,
    stride: int,
    control_hz: float,
    limits: RolloutLimits,
    image_size: tuple[int, int],
    bounds: ActionBounds | None = None,
) -> RolloutRequest:
    """A ``Rollout.Request``-shaped ``req`` -> :class:`RolloutRequest`; ``ValueError`` says what is wrong.

    Sizes are checked before anything is allocated, so an absurd request costs nothing.
    """
    n, h, a = int(req.num_candidates), int(req.horizon), int(req.action_dim)
    s = int(req.actions_per_step) or stride
    if not 1 <= n <= limits.max_candidates:
        raise ValueError(f"num_candidates={n} must be in [1, {limits.max_candidates}] (parameter max_candidates)")
    if not 1 <= h <= limits.max_horizon:
        raise ValueError(f"horizon={h} must be in [1, {limits.max_horizon}] (parameter max_rollout_horizon)")
    if a != action_dim:
        raise ValueError(f"action_dim={a}, but robot {robot_name} has {action_dim}")
    if s != stride:
        raise ValueError(
            f"actions_per_step={s}, but {robot_name} runs at {control_hz:g} Hz: {stride} native actions per 2 Hz step"
        )
    want = n * h * s * a
    if len(req.candidate_actions) != want:
        raise ValueError(
            f"candidate_actions has {len(req.candidate_actions)} values, expected num_candidates*horizon*"
            f"actions_per_step*action_dim = {n}*{h}*{s}*{a} = {want}"
        )
    cand = np.asarray(req.candidate_actions, np.float32).reshape(n, h, s, a)
    if not np.isfinite(cand).all():
        raise ValueError("candidate_actions contains NaN or inf")
    if bounds is not None and (why := bounds.problem(cand, "candidate_actions")):
        raise ValueError(why)
    num_steps = int(req.num_steps) or limits.default_num_steps
    if not 1 <= num_steps <= MAX_NUM_STEPS:
        raise ValueError(f"num_steps={num_steps} must be in [1, {MAX_NUM_STEPS}] (0 = the node's num_steps)")

    context, context_stamp = None, None
    if len(req.context_frames):
        t = len(req.context_frames)
        if len(req.context_actions) != t * s * a:
            raise ValueError(
                f"context_actions has {len(req.context_actions)} values, expected len(context_frames)*"
                f"actions_per_step*action_dim = {t}*{s}*{a} = {t * s * a}"
            )
        ctx_actions = np.asarray(req.context_actions, np.float32).reshape(t, s, a)
        if not np.isfinite(ctx_actions).all():
            raise ValueError("context_actions contains NaN or inf")
        if bounds is not None and (why := bounds.problem(ctx_actions, "context_actions")):
            raise ValueError(why)
        frames = np.stack([_image(img, image_size, f"context_frames[{i}]") for i, img in enumerate(req.context_frames)])
        stamps = [_stamp(img) for img in req.context_frames]
        if not all(map(math.isfinite, stamps)):
            raise ValueError("context_frames stamps must be finite")
        context, context_stamp = (frames, ctx_actions.reshape(t, s * a)), stamps[-1]
    elif len(req.context_actions):
        raise ValueError("context_actions given without context_frames")
    goal = _image(req.goal, image_size, "goal") if len(req.goal.data) else None
    return RolloutRequest(
        candidate_actions=cand.reshape(n, h, s * a),
        context=context,
        context_stamp=context_stamp,
        goal=goal,
        num_steps=num_steps,
        seed=int(req.seed) if req.seed >= 0 else None,
        return_frames=bool(req.return_frames),
    )
