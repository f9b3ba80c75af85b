"""Turn asynchronous camera frames and raw actions into aligned 2 Hz model steps.

On a robot the camera (e.g. 10-30 Hz) and the command/joint topic (e.g. 20-1000 Hz) arrive
independently and jitter. The model needs, per 2 Hz step ``t``, one frame and the step action
``a_t`` = the ``stride`` raw actions executed between frame ``t`` and frame ``t+1``
(docs/architecture.md). :class:`StepAssembler` keeps bounded buffers of both streams and,
on each tick, emits the newest frame plus the raw actions sampled on the native control grid
of the interval that just ended (zero-order hold: the command in force at each control
instant), which is what the robot actually executed.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Step:
    """One completed 2 Hz step: ``frame`` at ``stamp``, and ``action_before`` = the raw actions
    executed since the previous step's frame ((stride * action_dim,), oldest first), i.e. the
    action that produced this frame; None for the first step after a (re)start."""

    stamp: float
    frame: np.ndarray
    action_before: np.ndarray | None


@dataclass
class AssemblerStats:
    frames_in: int = 0
    actions_in: int = 0
    frames_dropped: int = 0  # overwritten before a tick used them, or rejected
    actions_rejected: int = 0
    steps_out: int = 0
    ticks_without_frame: int = 0


class StepAssembler:
    """Bounded buffers of raw inputs, emitting model steps on :meth:`tick`.

    Args:
        action_dim: numbers in one raw action.
        control_hz: native action rate; ``stride = control_hz / step_hz`` samples per step.
        step_hz: the model clock (2 Hz).
        max_frame_age: a tick uses the newest frame only if it is at most this old (s).
        action_buffer_s: how much raw action history is kept (s).
    """

    def __init__(
        self,
        action_dim: int,
        control_hz: float,
        step_hz: float = 2.0,
        max_frame_age: float = 0.25,
        action_buffer_s: float = 5.0,
    ) -> None:
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        ratio = control_hz / step_hz
        if control_hz <= 0 or abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(f"control_hz={control_hz} must be a positive multiple of step_hz={step_hz}")
        self.action_dim = int(action_dim)
        self.control_hz = float(control_hz)
        self.step_hz = float(step_hz)
        self.stride = int(round(ratio))
        self.max_frame_age = float(max_frame_age)
        self._actions: deque[tuple[float, np.ndarray]] = deque(
            maxlen=max(2 * self.stride, int(math.ceil(action_buffer_s * control_hz * 4)))
        )
        self._frame: tuple[float, np.ndarray] | None = None
        self._frame_used = True
        self._last_tick: float | None = None
        self.stats = AssemblerStats()

    # -- inputs ---------------------------------------------------------------------------
    def add_frame(self, frame: np.ndarray, stamp: float) -> None:
        """Keep the newest frame (older unused frames are counted as dropped)."""
        if not math.isfinite(stamp):
            self.stats.frames_dropped += 1
            raise ValueError(f"frame stamp must be finite, got {stamp}")
        self.stats.frames_in += 1
        if self._frame is not None and not self._frame_used:
            self.stats.frames_dropped += 1
        self._frame = (float(stamp), frame)
        self._frame_used = False

    def add_action(self, action: np.ndarray, stamp: float) -> None:
        """Append one raw action; rejects wrong length, non-finite values and stale stamps."""
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape[0] != self.action_dim:
            self.stats.actions_rejected += 1
            raise ValueError(f"action has {a.shape[0]} values, expected {self.action_dim}")
        if not np.isfinite(a).all():
            self.stats.actions_rejected += 1
            raise ValueError(f"action contains NaN or inf: {a.tolist()}")
        if not math.isfinite(stamp):
            self.stats.actions_rejected += 1
            raise ValueError(f"action stamp must be finite, got {stamp}")
        if self._actions and stamp < self._actions[-1][0]:
            self.stats.actions_rejected += 1
            raise ValueError(f"action stamp {stamp:.3f} is older than the last one {self._actions[-1][0]:.3f}")
        self.stats.actions_in += 1
        self._actions.append((float(stamp), a))

    # -- outputs --------------------------------------------------------------------------
    def sample_actions(self, t0: float, t1: float) -> np.ndarray | None:
        """Raw actions in force at ``stride`` control instants ``t0 + k (t1 - t0) / stride``,
        concatenated; None if no action is known at or before ``t0``."""
        if not self._actions:
            return None
        stamps = [s for s, _ in self._actions]
        out = []
        for k in range(self.stride):
            t = t0 + k * (t1 - t0) / self.stride
            i = bisect.bisect_right(stamps, t + 1e-9) - 1
            if i < 0:
                return None
            out.append(self._actions[i][1])
        return np.concatenate(out).astype(np.float32)

    def tick(self, stamp: float) -> Step | None:
        """Close the 2 Hz interval ending at ``stamp``.

        Returns the newest frame (if at most ``max_frame_age`` old) with the actions executed
        since the previous tick, or None when there is no fresh frame or no action history
        covering the interval (counted in ``stats``). A None breaks the step sequence: the
        caller decides whether to restart its context.
        """
        prev = self._last_tick
        self._last_tick = float(stamp)
        if self._frame is None or stamp - self._frame[0] > self.max_frame_age:
            self.stats.ticks_without_frame += 1
            return None
        action = None
        if prev is not None:
            action = self.sample_actions(prev, float(stamp))
            if action is None:
                self.stats.ticks_without_frame += 1
                return None
        self._frame_used = True
        self.stats.steps_out += 1
        return Step(stamp=float(stamp), frame=self._frame[1], action_before=action)

    def reset(self) -> None:
        self._actions.clear()
        self._frame = None
        self._frame_used = True
        self._last_tick = None

    @property
    def action_fill(self) -> float:
        """Fraction of the action buffer in use (for diagnostics)."""
        return len(self._actions) / self._actions.maxlen
