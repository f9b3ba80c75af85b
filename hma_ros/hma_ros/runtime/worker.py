"""One thread owns the model: live 2 Hz predictions and rollout requests through one queue.

The world model node's callbacks only convert messages and hand the results here
(:meth:`ModelWorker.push_steps` for cut 2 Hz steps, :meth:`ModelWorker.submit` for validated
rollout requests); nothing else ever touches the runner. The worker thread serves:

1. **Live steps first.** Queued steps are observed (the temporal KV cache grows by one frame
   each) and one prediction of ``horizon`` steps is made from the newest; ``on_prediction``
   gets it (the node publishes from this thread). Steps that pile up beyond
   ``max_queued_steps`` are dropped and the context restarts at the newest.
2. **Rollouts in frame-sized slices.** Queued requests are cut into jobs of at most
   :meth:`ModelWorker.max_job_candidates` candidates: the largest batch whose one predicted
   frame the cost model expects to take ``step_budget`` seconds or less. Requests on the live
   context with the same horizon and decoding steps share a job (dynamic batching, as
   inference servers do), a large request is split over several jobs. A job runs one
   predicted frame at a time; up to ``max_active_jobs`` jobs take turns, and queued live steps
   are served between any two frames, so a rollout delays a live prediction by at most one
   slice and never stops the 2 Hz stream, and a new request starts without waiting for the
   jobs before it to finish.
3. **Admission by cost.** A request whose estimated model time (horizon x its jobs' frames,
   from the cost model) exceeds ``max_rollout_seconds`` is refused at once, saying so; so is
   one that arrives with ``queue_size`` requests already waiting. Anything admitted is
   answered: there is no timeout while the model works.

The cost model is a least-squares line (seconds per predicted frame = a + b * candidates) over
the worker's own recent measurements, seeded by a calibration when the model is loaded.

**Everything torch runs in this one thread, loading included** (:meth:`ModelWorker.start`
takes a loader). libgomp, torch's OpenMP runtime, keeps a thread team per calling thread and
throttles its spin-waits once the teams hold more threads than there are CPUs: after the main
thread had run the model once, every op called from a second thread paid a futex wake-up, and
a 4-step live tick went from 64 to 155-170 ms on 2 cores (docs/executors.md).

**Threads per kind of work.** Live ticks (batch 1) run on ``live_threads`` intra-op threads
(default 1), rollouts on ``rollout_threads`` (default: every core). Two OpenMP threads on two
cores gain 25% for a batch of one with libgomp's default spin count, but beside any other busy
process their barrier waits turn into scheduler waits: a tick took 1.4 to 6.7 s beside two CPU
hogs at 2 threads, 0.1 s at 1. With the nodes' shorter spin count (hma_ros/nodes/__init__.py)
two threads gain nothing for a tick (p50 camera->prediction 87-90 against 84-88 ms).
Batched rollouts gain 1.5 to 1.8x from the second thread, so they keep it, and a tick between
two frames of a rollout uses the rollout threads too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from hma_ros.runtime.chunking import Step
from hma_ros.runtime.requests import RolloutRequest
from hma_ros.runtime.runner import NonFiniteOutputError

log = logging.getLogger(__name__)


class RolloutJobLike(Protocol):
    """What :meth:`Runner.start_rollout` returns (``runtime.runner.RolloutJob``)."""

    @property
    def num_candidates(self) -> int: ...

    @property
    def done(self) -> bool: ...

    def step(self) -> bool: ...


class Runner(Protocol):
    """The runtime core the worker drives (``runtime.runner.WorldModelRunner``)."""

    model_id: str
    num_steps: int
    spec: Any  # the model's EmbodimentSpec for this robot (action stats, stride)

    @property
    def image_size(self) -> tuple[int, int]: ...

    @property
    def ready(self) -> bool: ...

    def reset(self) -> None: ...

    def observe(self, frame: np.ndarray, action_before: np.ndarray | None, stamp: float) -> None: ...

    def predict(self, horizon: int) -> Any: ...

    def context_cache(self, frames: np.ndarray, actions: np.ndarray) -> Any: ...

    def start_rollout(
        self, candidate_actions: np.ndarray, context: Any = None, num_steps: int | None = None, seed: int | None = None
    ) -> RolloutJobLike: ...

    def finish_rollout(
        self, job: Any, rows: slice = ..., goal: np.ndarray | None = None, return_frames: bool = True
    ) -> Any: ...


class RolloutRefusedError(ValueError):
    """A rollout the worker will not (or could not) serve; the text says why."""


@dataclass(frozen=True)
class LivePrediction:
    """One live tick: the newest observed step, the runner's prediction from it, the model time."""

    step: Step
    prediction: Any
    horizon: int
    seconds: float


@dataclass(frozen=True)
class RolloutAnswer:
    """A served request: the runner's result (frames, actions, costs) and where the time went."""

    result: Any
    context_stamp: float  # stamp of the newest context frame the rollout started from
    model_seconds: float  # model time of the jobs that served this request (shared when batched)
    wait_seconds: float  # from submit to the first job that served it
    jobs: int
    shared: bool  # some job also served another request


@dataclass
class WorkerStats:
    """Counters for diagnostics (a snapshot is a copy)."""

    steps_observed: int = 0
    steps_dropped: int = 0  # the worker fell behind: the context restarted at the newest step
    predictions: int = 0
    prediction_errors: int = 0
    predictions_invalid: int = 0  # non-finite output: not published, context restarted
    rollouts: int = 0
    rollouts_failed: int = 0
    rollouts_refused_busy: int = 0
    rollouts_refused_cost: int = 0
    rollout_jobs: int = 0
    rollout_jobs_shared: int = 0
    busy_seconds: float = 0.0


class CostModel:
    """Seconds per predicted frame for ``n`` candidates, a + b * n, fitted by least squares to the
    newest ``window`` measurements (one per frame-step of a job)."""

    def __init__(self, window: int = 64) -> None:
        self._samples: deque[tuple[int, float]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._fit = (0.05, 0.01)

    def add(self, n: int, seconds: float) -> None:
        with self._lock:
            self._samples.append((int(n), float(seconds)))
            ns = np.array([s[0] for s in self._samples], np.float64)
            ts = np.array([s[1] for s in self._samples], np.float64)
        if np.ptp(ns) > 0:
            b, a = np.polyfit(ns, ts, 1)
            if b <= 0:  # noise on few points: proportional through the mean
                a, b = 0.0, ts.mean() / ns.mean()
        else:
            a, b = 0.0, ts.mean() / ns.mean()
        with self._lock:
            self._fit = (max(float(a), 0.0), max(float(b), 1e-6))

    def frame_seconds(self, n: int) -> float:
        a, b = self._fit
        return a + b * n

    @property
    def params(self) -> tuple[float, float]:
        """(a, b): seconds per predicted frame = a + b * candidates."""
        return self._fit

    @property
    def samples(self) -> int:
        return len(self._samples)


@dataclass
class _Entry:
    """A queued request: which of its candidates are taken, and what came back so far."""

    request: RolloutRequest
    future: Future
    submitted: float
    context: Any = None  # the explicit context's cache, built once by the first job
    context_stamp: float = 0.0  # of the context the first job started from
    next_row: int = 0  # candidates [0, next_row) are assigned to jobs
    parts: list[tuple[int, Any]] = field(default_factory=list)  # (first row, result) per finished job
    model_seconds: float = 0.0
    started: float | None = None
    jobs: int = 0
    shared: bool = False

    @property
    def remaining(self) -> int:
        return self.request.num_candidates - self.next_row


@dataclass
class _Job:
    """A started rollout job: which candidates of which requests it serves."""

    plan: list[tuple[_Entry, int, int]]  # (entry, first row, rows)
    job: Any = None
    model_seconds: float = 0.0


def tick_frames(horizon: int, num_steps: int) -> float:
    """A live tick's work in frames of 2 decoding passes: the observed frame, then ``horizon``
    predicted frames of ``num_steps`` passes each (at least 2: the fused commit-and-decode)."""
    return 1 + horizon * max(num_steps, 2) / 2


class ModelWorker:
    """The thread that owns ``runner``; see the module docstring.

    Args:
        runner: the runtime core (not thread-safe: only this worker calls it once started).
        on_prediction: called (in the worker thread) with each :class:`LivePrediction`.
        on_error: called with (kind, message) for a failed live tick ("error" or "invalid").
        horizon, num_steps: live prediction settings (attributes, settable any time).
        max_queued_steps: live steps waiting beyond this restart the context at the newest.
        queue_size: rollout requests waiting beyond this are refused as busy.
        max_rollout_seconds: largest estimated model time one request may take.
        step_budget: target seconds of one rollout frame-step (how long a live tick may wait).
        max_job_candidates: hard cap on the candidates of one job.
        max_active_jobs: rollout jobs in progress at once (they take turns frame by frame).
        live_threads, rollout_threads: intra-op threads for each kind of work (0: every core).
    """

    def __init__(
        self,
        *,
        on_prediction: Callable[[LivePrediction], None],
        on_error: Callable[[str, str], None] | None = None,
        horizon: int = 4,
        num_steps: int = 2,
        max_queued_steps: int = 8,
        queue_size: int = 16,
        max_rollout_seconds: float = 10.0,
        step_budget: float = 0.2,
        max_job_candidates: int = 256,
        max_active_jobs: int = 2,
        live_threads: int = 1,
        rollout_threads: int = 0,
    ) -> None:
        self.runner: Runner | None = None
        self.max_active_jobs = int(max_active_jobs)
        self.live_threads = int(live_threads) or os.cpu_count() or 1
        self.rollout_threads = int(rollout_threads) or os.cpu_count() or 1
        self._threads_now = 0
        self._steps_since = 0.0  # when the oldest queued step arrived
        self.step_waits: deque[float] = deque(maxlen=50)  # seconds a cut step waited for the model
        self.slices: deque[float] = deque(maxlen=200)  # seconds of each slice of work (a tick, a frame)
        self._active: deque[_Job] = deque()  # rollout jobs in progress (worker thread only)
        self.live_frame_seconds = 0.05  # a live tick's seconds per predicted frame (calibrated, then measured)
        self.on_prediction = on_prediction
        self.on_error = on_error or (lambda kind, msg: log.warning("%s: %s", kind, msg))
        self.horizon, self.num_steps = int(horizon), int(num_steps)
        self.max_queued_steps = int(max_queued_steps)
        self.queue_size = int(queue_size)
        self.max_rollout_seconds = float(max_rollout_seconds)
        self.step_budget = float(step_budget)
        self.max_job_candidates_cap = int(max_job_candidates)
        self.cost = CostModel()
        self.stats = WorkerStats()
        self.tick_seconds: deque[float] = deque(maxlen=50)  # live ticks' model time
        self.prediction_times: deque[float] = deque(maxlen=20)  # monotonic time of each published tick
        self.context_stamp = 0.0  # stamp of the newest live step observed (worker thread)
        self._cond = threading.Condition()  # guards everything below, and stats
        self._steps: list[Step] = []
        self._queue: deque[_Entry] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future]] = deque()
        self._serving = False
        self._stop_reason = "the world model is inactive"
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- life -------------------------------------------------------------------------------
    def start(self, load: Callable[[], Runner], calibrate: bool = True) -> Runner:
        """Start the thread and load the runner in it (then time a few rollouts to seed the cost
        model, which also warms the backend up). Raises whatever ``load`` raised; the thread is
        then stopped again."""
        if self._thread is not None:
            raise RuntimeError("the model worker is already running")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hma_model", daemon=True)
        self._thread.start()

        def load_and_calibrate() -> Runner:
            runner = load()
            if calibrate:
                self._calibrate(runner)
            self.runner = runner
            return runner

        try:
            return self.call(load_and_calibrate).result()
        except BaseException:
            self.stop()
            raise

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn`` in the worker thread (between two slices of model work); its future."""
        future: Future = Future()
        with self._cond:
            if self._thread is None or self._stopping:
                raise RuntimeError("the model worker is not running")
            self._calls.append((fn, future))
            self._cond.notify_all()
        return future

    def activate(self) -> None:
        """Serve live steps and rollouts (the live context starts empty)."""
        self.call(self.runner.reset).result()
        with self._cond:
            self._serving = True

    def deactivate(self, reason: str = "the world model is inactive", timeout: float = 10.0) -> bool:
        """Stop serving: queued rollouts are refused with ``reason``, a running one stops at its
        next frame. True once the thread is idle (within ``timeout``)."""
        with self._cond:
            self._serving = False
            self._stop_reason = reason
            queued, self._queue = list(self._queue), deque()
            self._steps.clear()
        for entry in queued:
            _fail(entry.future, RolloutRefusedError(reason))
        if not self.running:
            return True
        try:
            self.call(lambda: None).result(timeout)  # returns once the job in progress is over
        except TimeoutError:
            return False
        return True

    def stop(self, timeout: float = 10.0, reason: str = "the world model is stopping") -> bool:
        """Deactivate, let the thread end and release the runner; True if it ended within ``timeout``."""
        self.deactivate(reason, timeout)
        with self._cond:
            self._stopping = True
            calls, self._calls = list(self._calls), deque()
            self._cond.notify_all()
        for _, future in calls:
            _fail(future, RuntimeError(reason))
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        self.runner = None
        return True

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def serving(self) -> bool:
        return self._serving

    # -- inputs (any thread) ----------------------------------------------------------------------
    def push_steps(self, steps: list[Step]) -> None:
        """Queue cut 2 Hz steps for the live context; wakes the worker."""
        if not steps:
            return
        with self._cond:
            if not self._serving:
                return
            if not self._steps:
                self._steps_since = time.monotonic()
            self._steps.extend(steps)
            excess = len(self._steps) - self.max_queued_steps
            if excess > 0:  # the model cannot keep up: restart the context from the newest step
                self.stats.steps_dropped += excess
                del self._steps[:excess]
                first = self._steps[0]
                self._steps[0] = Step(first.stamp, first.frame, None)
            self._cond.notify_all()

    def submit(self, request: RolloutRequest) -> Future:
        """Queue a validated request; the future resolves to a :class:`RolloutAnswer` or raises
        :class:`RolloutRefusedError`. Raises :class:`RolloutRefusedError` at once if it is not admitted."""
        if not self._serving:
            raise RolloutRefusedError("the world model is not active")
        if request.context is None and not self.runner.ready:
            raise RolloutRefusedError("not enough live context yet (waiting for camera and actions)")
        self._admit(request)
        future: Future = Future()
        with self._cond:
            if not self._serving:
                raise RolloutRefusedError("the world model is not active")
            if len(self._queue) >= self.queue_size:
                self.stats.rollouts_refused_busy += 1
                raise RolloutRefusedError(
                    f"busy: {len(self._queue)} rollout requests are already queued (parameter rollout_queue_size); "
                    "retry later"
                )
            self._queue.append(_Entry(request, future, time.monotonic()))
            self._cond.notify_all()
        return future

    def estimate(self, request: RolloutRequest) -> float:
        """Estimated model seconds for ``request`` alone: its jobs' frame-steps times its horizon."""
        per_job = self.max_job_candidates()
        full, rest = divmod(request.num_candidates, per_job)
        frame = full * self.cost.frame_seconds(per_job) + (self.cost.frame_seconds(rest) if rest else 0.0)
        return frame * request.horizon

    def max_job_candidates(self) -> int:
        """Largest number of candidates whose one predicted frame fits ``step_budget`` (>= 1)."""
        a, b = self.cost.params
        n = int((self.step_budget - a) / b) if self.step_budget > a else 1
        return max(1, min(n, self.max_job_candidates_cap))

    def _admit(self, request: RolloutRequest) -> None:
        n = request.num_candidates
        per_job = self.max_job_candidates()
        if request.seed is not None and n > per_job:
            with self._cond:
                self.stats.rollouts_refused_cost += 1
            raise RolloutRefusedError(
                f"a seeded request runs as one batch, and one predicted frame of {n} candidates would hold the model "
                f"~{self.cost.frame_seconds(n):.2f} s (more than {self.step_budget:g} s delays the live 2 Hz "
                f"prediction): ask for at most {per_job} candidates, or leave the seed unset (negative)"
            )
        est = self.estimate(request)
        if est > self.max_rollout_seconds:
            with self._cond:
                self.stats.rollouts_refused_cost += 1
            raise RolloutRefusedError(
                f"estimated {est:.1f} s of model time for {n} candidates x {request.horizon} steps "
                f"({self.cost.frame_seconds(min(n, per_job)) * 1e3:.0f} ms per predicted frame of "
                f"{min(n, per_job)} candidates) exceeds max_rollout_time {self.max_rollout_seconds:g} s: "
                "ask for fewer candidates or a shorter horizon, or split the request"
            )

    def tick_estimate(self, horizon: int, num_steps: int) -> float:
        """Estimated model seconds of one live tick on the live threads."""
        return self.live_frame_seconds * tick_frames(horizon, num_steps)

    def _set_threads(self, n: int) -> None:
        """Intra-op threads of the model from now on (this thread only: the setting is per caller)."""
        if n != self._threads_now:
            torch.set_num_threads(n)
            self._threads_now = n

    def _calibrate(self, runner: Runner, sizes: tuple[int, ...] = (1, 8), horizon: int = 2) -> None:
        """Seed the cost models by timing rollouts of ``sizes`` candidates (and one candidate on
        the live threads) from a throw-away context (the mean action, blank frames)."""
        h, w = runner.image_size
        frame = np.zeros((h, w, 3), np.uint8)
        spec = runner.spec
        mean = np.tile(np.asarray(spec.action_mean, np.float32), spec.step_action_dim // spec.action_dim)
        cache = runner.context_cache(np.stack([frame, frame]), np.stack([mean, mean]))

        def time_job(n: int) -> list[float]:
            job, times = runner.start_rollout(np.tile(mean, (n, horizon, 1)), context=cache), []
            while not job.done:
                t0 = time.perf_counter()
                job.step()
                times.append(time.perf_counter() - t0)
            return times

        self._set_threads(self.rollout_threads)
        for n in (sizes[0], *sizes):  # the first size twice: the first call pays one-off costs
            for seconds in time_job(n):
                self.cost.add(n, seconds)
        self._set_threads(self.live_threads)
        time_job(1)
        self.live_frame_seconds = float(np.median(time_job(1)))

    # -- the thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        """One slice of work per turn, live steps first: a call, a live tick, or one predicted
        frame of one rollout job. Jobs take turns (round robin), so a request that arrives while
        others run starts at once instead of waiting for them: answers come back in about the
        time of all the work in flight, not of everything queued before."""
        active = self._active
        while True:
            with self._cond:
                while not self._stopping and not (self._calls or self._steps or self._queue or active):
                    self._cond.wait()
                stopped = self._stopping or not self._serving
                call = self._calls.popleft() if self._calls and not self._stopping else None
                have_steps, queued = bool(self._steps), bool(self._queue)
            while stopped and active:  # deactivated: jobs in progress are answered before anything else
                self._fail_job(active.popleft(), RolloutRefusedError(self._stop_reason))
            if self._stopping:
                return
            t0 = time.perf_counter()
            try:
                if call is not None:
                    fn, future = call
                    try:
                        future.set_result(fn())
                    except BaseException as e:  # noqa: BLE001 - the caller gets it
                        future.set_exception(e)
                elif have_steps:
                    self._live()
                else:
                    if queued and len(active) < self.max_active_jobs and (job := self._start_job()) is not None:
                        active.append(job)
                    if active:
                        job = active.popleft()
                        if not self._advance(job):
                            active.append(job)
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one bad call
                self.on_error("error", f"model worker: {type(e).__name__}: {e}")
            self.slices.append(time.perf_counter() - t0)

    def _take_steps(self) -> list[Step]:
        with self._cond:
            steps, self._steps = self._steps, []
            if steps:
                self.step_waits.append(time.monotonic() - self._steps_since)
            return steps

    def _live(self) -> None:
        """Observe the queued steps, then predict from the newest."""
        steps = self._take_steps()
        if not steps:
            return
        t0 = time.perf_counter()
        runner = self.runner
        # Between two frames of a rollout the process runs its rollout threads anyway: so does the tick.
        self._set_threads(self.rollout_threads if self._active else self.live_threads)
        try:
            for step in steps:  # action_before None starts a new context inside the runner
                runner.observe(step.frame, step.action_before, step.stamp)
                self.context_stamp = step.stamp
            with self._cond:
                self.stats.steps_observed += len(steps)
            if not runner.ready:
                return
            horizon = self.horizon
            runner.num_steps = self.num_steps
            prediction = runner.predict(horizon)
        except Exception as e:  # noqa: BLE001 - reported, then the next step retries
            invalid = isinstance(e, NonFiniteOutputError)
            if invalid:
                runner.reset()  # a context that produced NaN would go on producing it
            with self._cond:
                self.stats.predictions_invalid += invalid
                self.stats.prediction_errors += not invalid
            self.on_error(
                "invalid" if invalid else "error",
                f"prediction {'discarded' if invalid else 'failed'}: {type(e).__name__}: {e}"
                + ("; the live context restarts" if invalid else ""),
            )
            return
        finally:
            self._add_busy(time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        if not self._active:  # what a tick costs on the live threads alone
            frames = tick_frames(horizon, self.num_steps)
            self.live_frame_seconds = 0.8 * self.live_frame_seconds + 0.2 * seconds / frames
        with self._cond:
            self.stats.predictions += 1
            self.tick_seconds.append(seconds)
            self.prediction_times.append(time.monotonic())
        try:
            self.on_prediction(LivePrediction(steps[-1], prediction, horizon, seconds))
        except Exception as e:  # noqa: BLE001 - a failed publish must not fail a rollout in progress
            self.on_error("error", f"publishing a prediction failed: {type(e).__name__}: {e}")

    def _add_busy(self, seconds: float) -> None:
        with self._cond:
            self.stats.busy_seconds += seconds

    def _next_job(self) -> list[tuple[_Entry, int, int]]:
        """Assign candidates to the next job: [(entry, first row, rows)], head of the queue first,
        then other requests that may share it, up to ``max_job_candidates``."""
        capacity = self.max_job_candidates()
        with self._cond:
            if not self._queue:
                return []
            head = self._queue[0]
            key = head.request.batch_key
            if head.request.seed is not None:
                capacity = max(capacity, head.request.num_candidates)  # admitted as one batch
            members = [head] + ([e for e in list(self._queue)[1:] if e.request.batch_key == key] if key else [])
            plan = []
            for entry in members:
                k = min(entry.remaining, capacity)
                if k <= 0:
                    break
                plan.append((entry, entry.next_row, k))
                entry.next_row += k
                capacity -= k
            for entry, _, _ in plan:
                if entry.remaining == 0:
                    self._queue.remove(entry)
            return plan

    def _start_job(self) -> _Job | None:
        """Take the next candidates off the queue and start their job (None: nothing queued, or
        the start failed and its requests were answered)."""
        plan = self._next_job()
        if not plan:
            return None
        runner, head = self.runner, plan[0][0].request
        now = time.monotonic()
        for entry, _, _ in plan:
            if entry.started is None:
                entry.context_stamp = (
                    entry.request.context_stamp if entry.request.context is not None else self.context_stamp
                )
            entry.started = entry.started or now
            entry.jobs += 1
            entry.shared = entry.shared or len(plan) > 1
        active = _Job(plan)
        self._set_threads(self.rollout_threads)
        try:
            context = None
            if head.context is not None:
                entry = plan[0][0]
                if entry.context is None:
                    entry.context = runner.context_cache(*head.context)
                context = entry.context
            actions = np.concatenate([e.request.candidate_actions[r : r + k] for e, r, k in plan])
            active.job = runner.start_rollout(actions, context=context, num_steps=head.num_steps, seed=head.seed)
        except Exception as e:  # noqa: BLE001 - every request in the job gets the reason
            self._fail_job(active, e)
            return None
        return active

    def _advance(self, active: _Job) -> bool:
        """One predicted frame of ``active``; at its end, decode and answer. True when it is over."""
        job, runner = active.job, self.runner
        try:
            if not self._serving:
                raise RolloutRefusedError(self._stop_reason)
            self._set_threads(self.rollout_threads)
            t0 = time.perf_counter()
            job.step()
            dt = time.perf_counter() - t0
            self.cost.add(job.num_candidates, dt)
            if not job.done:
                active.model_seconds += dt
                self._add_busy(dt)
                return False
            offset = 0
            for entry, first, k in active.plan:
                req = entry.request
                part = runner.finish_rollout(
                    job, rows=slice(offset, offset + k), goal=req.goal, return_frames=req.return_frames
                )
                entry.parts.append((first, part))
                offset += k
            dt = time.perf_counter() - t0
            active.model_seconds += dt
            self._add_busy(dt)
        except Exception as e:  # noqa: BLE001 - every request in the job gets the reason
            self._fail_job(active, e)
            return True
        with self._cond:
            self.stats.rollout_jobs += 1
            self.stats.rollout_jobs_shared += len(active.plan) > 1
        for entry, _, _ in active.plan:
            entry.model_seconds += active.model_seconds
            if entry.remaining == 0 and sum(p.actions.shape[0] for _, p in entry.parts) == entry.request.num_candidates:
                self._complete(entry)
        return True

    def _fail_job(self, active: _Job, e: Exception) -> None:
        if isinstance(e, RolloutRefusedError):
            why = str(e)
        elif isinstance(e, NonFiniteOutputError):
            why = f"rollout failed: {e}"
        elif isinstance(e, ValueError):
            why = f"runner refused the request: {e}"
        else:
            why = f"rollout failed: {type(e).__name__}: {e}"
        if not isinstance(e, ValueError):
            self.on_error("error", why)
        with self._cond:
            for entry, _, _ in active.plan:
                if entry in self._queue:
                    self._queue.remove(entry)
                self.stats.rollouts_failed += 1
        for entry, _, _ in active.plan:
            _fail(entry.future, RolloutRefusedError(why))

    def _complete(self, entry: _Entry) -> None:
        parts = [p for _, p in sorted(entry.parts, key=lambda fp: fp[0])]
        result = parts[0] if len(parts) == 1 else _concat_results(parts)
        with self._cond:
            self.stats.rollouts += 1
        if not entry.future.done():
            entry.future.set_result(
                RolloutAnswer(
                    result=result,
                    context_stamp=entry.context_stamp,
                    model_seconds=entry.model_seconds,
                    wait_seconds=(entry.started or entry.submitted) - entry.submitted,
                    jobs=entry.jobs,
                    shared=entry.shared,
                )
            )

    # -- diagnostics --------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Counters and recent timings, for /diagnostics (any thread)."""
        with self._cond:
            stats = dict(vars(self.stats))
            ticks = list(self.tick_seconds)
            times = list(self.prediction_times)
            queued = len(self._queue)
            pending = len(self._steps)
            waits, slices = list(self.step_waits), list(self.slices)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return {
            **stats,
            "rollouts_queued": queued,
            "steps_pending": pending,
            "prediction_rate_hz": rate,
            "tick_last_s": ticks[-1] if ticks else None,
            "tick_mean_s": float(np.mean(ticks)) if ticks else None,
            "tick_max_s": float(np.max(ticks)) if ticks else None,
            "step_wait_max_s": max(waits, default=None),
            "slice_max_s": max(slices, default=None),
            "frame_seconds_1": self.cost.frame_seconds(1),
            "live_frame_seconds": self.live_frame_seconds,
            "max_job_candidates": self.max_job_candidates(),
        }


def _fail(future: Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


def _concat_results(parts: list[Any]) -> Any:
    """Concatenate per-job results of one request along the candidates."""
    first = parts[0]

    def cat(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate(values)

    return type(first)(frames=cat("frames"), actions=cat("actions"), costs=cat("costs"))
