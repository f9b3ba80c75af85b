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
from collections.abc import Callable
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


@dataclass
class CutterStats:
    """What :class:`StepCutter` did, for diagnostics."""

    steps: int = 0  # 2 Hz steps cut from the inputs
    steps_actions_held: int = 0  # cut after max_action_wait without actions: last command held
    time_resets: int = 0  # a stamp jumped back on one topic: a new context
    stale_after_reset: int = 0  # late messages of the previous timeline, ignored


class StepCutter:
    """Live camera frames and raw actions in, 2 Hz model steps out: what the world model node
    does with its subscriptions, without ROS.

    Steps are cut on the camera's own time base, not on a wall clock, so a live robot, a
    recording replayed at any rate and a sim clock all yield the same 0.5 s steps. A step is cut
    at the first frame half a step period after the previous step (a new context starts at the
    newest frame the actions have reached) once the action stream has reached that frame's time:
    the camera (best effort) and the actions (reliable, queued) can arrive seconds apart on a
    loaded machine, and a step cut early would carry stale commands. After ``max_action_wait``
    seconds of camera time without actions (a silent command topic) the step is cut holding the
    last command.

    A stamp more than ``time_jump`` s behind its own topic's newest one (a looped recording, a
    reset sim clock) restarts everything: the next step carries no action, so the runner starts
    a new context instead of mixing two timelines. Each topic is compared with itself only: one
    stream lagging the other is not a jump. The other topic's messages of the previous timeline
    still in flight (a reliable command queue drains after the camera looped) are ignored while
    they lie more than ``time_jump`` ahead of the topic that jumped, so one loop is one reset;
    that topic rejoins as soon as it is back within ``time_jump`` of the new timeline (it looped
    too, or the jump was one bad stamp and the jumped topic is back on the old clock). A camera
    gap of more than 1.5 step periods also starts a new context.

    Not thread-safe: one caller (the node's executor thread) feeds it.

    Args:
        action_dim, control_hz: the robot's raw actions.
        step_hz: the model clock (2 Hz).
        max_action_wait: seconds of camera time a step waits for the actions (settable).
        max_action_wait_cap: the largest ``max_action_wait`` will ever be; frames are buffered that long.
        step_tolerance: camera stamp jitter accepted when cutting steps (s).
        time_jump: how far back a stamp may jump before the context restarts (s).
        on_time_jump: called with a one-line description when the context restarts.
    """

    def __init__(
        self,
        action_dim: int,
        control_hz: float,
        step_hz: float = 2.0,
        *,
        max_action_wait: float = 2.0,
        max_action_wait_cap: float = 10.0,
        step_tolerance: float = 0.02,
        time_jump: float = 1.0,
        on_time_jump: Callable[[str], None] | None = None,
    ) -> None:
        if not 0.0 <= max_action_wait <= max_action_wait_cap:
            raise ValueError(f"max_action_wait={max_action_wait} must be in [0, {max_action_wait_cap}]")
        self.period = 1.0 / step_hz
        self.max_action_wait = float(max_action_wait)
        self.step_tolerance = float(step_tolerance)
        self.time_jump = float(time_jump)
        self.on_time_jump = on_time_jump
        self.assembler = StepAssembler(
            action_dim, control_hz, step_hz, max_frame_age=math.inf, frame_buffer_s=max_action_wait_cap + 1.0
        )
        self.stats = CutterStats()
        self._last_cut: float | None = None  # stamp of the newest step cut
        self._newest: dict[str, float] = {}  # per topic: streams may lag each other
        self._jumped: str | None = None  # the topic whose jump back started the current timeline
        self._rejoining: set[str] = set()  # topics not yet seen on the current timeline

    @property
    def last_step_stamp(self) -> float | None:
        return self._last_cut

    def add_frame(self, frame: np.ndarray, stamp: float) -> list[Step]:
        """Buffer a camera frame; returns the steps it completes. ValueError: a stale or
        non-finite stamp (the frame is dropped and counted)."""
        if self._previous_timeline("camera", stamp):
            return []
        self.assembler.add_frame(frame, stamp)
        return self._cut()

    def add_action(self, action: np.ndarray, stamp: float) -> list[Step]:
        """Buffer one raw action; returns the steps it completes. ValueError: wrong length,
        non-finite values or a stale stamp."""
        if self._previous_timeline("action", stamp):
            return []
        self.assembler.add_action(action, stamp)
        return self._cut()

    def reset(self) -> None:
        """Forget both streams: the next step starts a new context."""
        self.assembler.reset()
        self._last_cut = None
        self._newest.clear()
        self._jumped, self._rejoining = None, set()

    def _previous_timeline(self, topic: str, stamp: float) -> bool:
        """Restart on a time jump back; True for a late message of the timeline before the last
        restart (to be ignored)."""
        if not math.isfinite(stamp):
            return False  # the assembler refuses it with the reason
        if topic in self._rejoining:
            current = self._newest.get(self._jumped)
            if current is not None and stamp > current + self.time_jump:
                self.stats.stale_after_reset += 1
                return True
            self._rejoining.discard(topic)  # within reach of the new timeline: it has joined
        newest = self._newest.get(topic)
        if newest is not None and stamp < newest - self.time_jump:
            others = {t for t in self._newest if t != topic}
            self.reset()
            self._jumped, self._rejoining = topic, others
            self.stats.time_resets += 1
            if self.on_time_jump is not None:
                self.on_time_jump(
                    f"{topic} time jumped back {newest - stamp:.1f} s (recording looped or clock reset): "
                    "starting a new context"
                )
        self._newest[topic] = max(self._newest.get(topic, stamp), stamp)
        return False

    def _cut(self) -> list[Step]:
        asm, out = self.assembler, []
        while True:
            last = self._last_cut
            if last is None:
                stamp = asm.newest_covered_frame_stamp()
                stamp = asm.next_frame_stamp() if stamp is None else stamp
            else:
                stamp = asm.next_frame_stamp(last + self.period - self.step_tolerance)
            if stamp is None:
                return out
            if not asm.actions_cover(stamp):
                if asm.newest_frame_stamp - stamp < self.max_action_wait:
                    return out  # the next action (or frame) retries
                self.stats.steps_actions_held += 1
            step = asm.tick(stamp)
            if step is None:  # no action history covering the interval yet
                return out
            if last is not None and stamp > last + 1.5 * self.period:
                step = Step(step.stamp, step.frame, None)  # a gap in the camera stream: new context
            self._last_cut = stamp
            self.stats.steps += 1
            out.append(step)
