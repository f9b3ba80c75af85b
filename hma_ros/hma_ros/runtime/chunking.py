"""Turn asynchronous camera frames and raw actions into aligned 2 Hz model steps.

On a robot the camera (e.g. 10-30 Hz) and the command/joint topic (e.g. 20-1000 Hz) arrive
independently and jitter. The model needs, per 2 Hz step ``t``, one frame and the step action
``a_t`` = the ``stride`` raw actions executed between frame ``t`` and frame ``t+1``
(docs/architecture.md). :class:`StepAssembler` keeps bounded buffers of both streams and,
on each tick, emits the newest frame plus the raw actions sampled on the native control grid
of the interval that just ended (zero-order hold: the command in force at each control
instant), which is what the robot actually executed.

The two streams need not arrive in step: a reliable action topic can lag a best-effort
camera by seconds on a loaded machine. Frames are therefore buffered (by time), and a caller
cuts a step at a frame only once :meth:`StepAssembler.actions_cover` says the action stream
has reached it, so a lagging stream delays steps instead of filling them with stale commands.
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
    frames_dropped: int = 0  # passed over by a tick, pushed out of the buffer, or rejected
    actions_rejected: int = 0
    steps_out: int = 0
    ticks_without_frame: int = 0


def _stamp_problem(kind: str, stamp: float, buffer: deque[tuple[float, np.ndarray]]) -> str | None:
    """Why ``stamp`` cannot join ``buffer`` (stamps must be finite and non-decreasing), or None."""
    if not math.isfinite(stamp):
        return f"{kind} stamp must be finite, got {stamp}"
    if buffer and stamp < buffer[-1][0]:
        return f"{kind} stamp {stamp:.3f} is older than the last one {buffer[-1][0]:.3f}"
    return None


class StepAssembler:
    """Bounded buffers of raw inputs, emitting model steps on :meth:`tick`.

    Args:
        action_dim: numbers in one raw action.
        control_hz: native action rate; ``stride = control_hz / step_hz`` samples per step.
        step_hz: the model clock (2 Hz).
        max_frame_age: a tick uses its frame only if it is at most this old (s).
        action_buffer_s: how much raw action history is kept (s).
        frame_buffer_s: how much camera history is kept while steps wait for actions (s).
    """

    MAX_FRAMES = 256  # hard bound on buffered frames, whatever the camera rate

    def __init__(
        self,
        action_dim: int,
        control_hz: float,
        step_hz: float = 2.0,
        max_frame_age: float = 0.25,
        action_buffer_s: float = 5.0,
        frame_buffer_s: float = 3.0,
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
        self.frame_buffer_s = float(frame_buffer_s)
        self._frames: deque[tuple[float, np.ndarray]] = deque()  # unused frames, oldest first
        self._last_tick: float | None = None
        self.stats = AssemblerStats()

    # -- inputs ---------------------------------------------------------------------------
    def add_frame(self, frame: np.ndarray, stamp: float) -> None:
        """Buffer a frame; frames older than ``frame_buffer_s`` behind it are dropped (counted).

        Refuses a non-finite stamp and one older than the newest buffered frame.
        """
        why = _stamp_problem("frame", stamp, self._frames)
        if why:
            self.stats.frames_dropped += 1
            raise ValueError(why)
        self.stats.frames_in += 1
        self._frames.append((float(stamp), frame))
        while len(self._frames) > self.MAX_FRAMES or self._frames[0][0] < stamp - self.frame_buffer_s:
            self._frames.popleft()
            self.stats.frames_dropped += 1

    def next_frame_stamp(self, after: float = -math.inf) -> float | None:
        """Stamp of the oldest buffered frame at or after ``after``."""
        for stamp, _ in self._frames:
            if stamp >= after:
                return stamp
        return None

    def newest_covered_frame_stamp(self) -> float | None:
        """Stamp of the newest buffered frame that the action stream has reached."""
        for stamp, _ in reversed(self._frames):
            if self.actions_cover(stamp):
                return stamp
        return None

    @property
    def newest_frame_stamp(self) -> float | None:
        return self._frames[-1][0] if self._frames else None

    @property
    def newest_action_stamp(self) -> float | None:
        return self._actions[-1][0] if self._actions else None

    def actions_cover(self, stamp: float) -> bool:
        """True when the action stream has reached the last control instant before ``stamp``,
        so a step closed at ``stamp`` knows every command executed in its interval."""
        newest = self.newest_action_stamp
        return newest is not None and newest >= stamp - 1.0 / self.control_hz - 1e-6

    def add_action(self, action: np.ndarray, stamp: float) -> None:
        """Append one raw action; rejects wrong length, non-finite values and stale stamps."""
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if a.shape[0] != self.action_dim:
            self.stats.actions_rejected += 1
            raise ValueError(f"action has {a.shape[0]} values, expected {self.action_dim}")
        if not np.isfinite(a).all():
            self.stats.actions_rejected += 1
            raise ValueError(f"action contains NaN or inf: {a.tolist()}")
        why = _stamp_problem("action", stamp, self._actions)
        if why:
            self.stats.actions_rejected += 1
            raise ValueError(why)
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

        Returns the newest buffered frame at or before ``stamp`` (if at most ``max_frame_age``
        old) with the actions executed since the previous tick, or None when there is no fresh
        frame or no action history covering the interval (counted in ``stats``). Frames up to
        ``stamp`` are consumed either way. A None breaks the step sequence: the caller decides
        whether to restart its context.
        """
        prev = self._last_tick
        self._last_tick = float(stamp)
        frame = None
        while self._frames and self._frames[0][0] <= stamp + 1e-9:
            if frame is not None:
                self.stats.frames_dropped += 1
            frame = self._frames.popleft()
        if frame is None or stamp - frame[0] > self.max_frame_age:
            self.stats.frames_dropped += frame is not None
            self.stats.ticks_without_frame += 1
            return None
        action = None
        if prev is not None:
            action = self.sample_actions(prev, float(stamp))
            if action is None:
                self.stats.ticks_without_frame += 1
                return None
        self.stats.steps_out += 1
        return Step(stamp=float(stamp), frame=frame[1], action_before=action)

    def reset(self) -> None:
        self._actions.clear()
        self._frames.clear()
        self._last_tick = None

    @property
    def action_fill(self) -> float:
        """Fraction of the action buffer in use (for diagnostics)."""
        return len(self._actions) / self._actions.maxlen
