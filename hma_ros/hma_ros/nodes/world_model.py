"""The HMA world model as a ROS 2 lifecycle node: a thin shell around ``WorldModelRunner``.

configure  loads the robot config (config/robots/<robot>.yaml) and the checkpoint; a missing
           or bad one fails the transition with one clear log line.
activate   subscribes to the camera (sensor-data QoS) and the action topic, starts the 2 Hz
           prediction timer and serves /hma/rollout.
deactivate stops all of that; cleanup releases the model.

Concurrency (STYLE.md 12): the subscriptions only convert messages and append to the bounded
buffers of a :class:`StepAssembler` under ``_lock`` (held for a few microseconds). The model
runs in a prediction thread owned by the node (started on activate, joined on deactivate),
woken as soon as an input callback cuts a 2 Hz step, and every 0.5 s for steps a skipped tick
left; the executor (a MultiThreadedExecutor) only runs short callbacks, each entity in its own
callback group. The runner is not assumed thread-safe, so model calls are serialised by
``_model_lock``: a tick that finds the model busy with a rollout is skipped (and counted), a
rollout waits up to ``rollout_wait`` seconds for a running tick. Streams are compared with
themselves only: a lagging action queue delays steps (up to ``max_action_wait``), a stamp
jumping back on one topic restarts the context.

    python -m hma_ros.nodes.world_model --ros-args -p robot:=franka -p autostart:=true
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from hma_ros.nodes.convert import (
    ConversionError,
    image_to_numpy,
    joint_positions,
    numpy_to_image,
    sec_to_stamp,
    stamp_to_sec,
)
from hma_ros.runtime.chunking import Step, StepAssembler
from hma_ros.runtime.robot_config import MODEL_HZ, RobotConfig, RobotConfigError, load_robot_config
from hma_ros_interfaces.msg import PredictedFrames
from hma_ros_interfaces.srv import Rollout

BACKENDS = ("torch", "onnxruntime", "tensorrt")
STEP_PERIOD = 1.0 / MODEL_HZ
TIME_JUMP = 1.0  # s: an input stamp this far behind its topic's newest one restarts the context
MAX_ACTION_WAIT = 10.0  # s: upper bound of max_action_wait (frames are buffered that long)
# Sensor-data QoS (best effort: the newest frames win, nothing is resent), but 10 deep, not 5:
# frames are buffered until the commands catch up, and a busy executor must not lose them.
CAMERA_QOS = QoSProfile(
    history=qos_profile_sensor_data.history,
    depth=10,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)
ACTION_QUEUE_S = 3.0  # s of native-rate actions the subscription queue holds (a reliable topic may lag)
STEP_TOLERANCE = 0.02  # s: camera stamp jitter accepted when cutting 0.5 s steps
MAX_QUEUED_STEPS = 8  # steps waiting for the runner; more means it cannot keep up


def load_runner(checkpoint: Path, robot: RobotConfig, backend: str) -> Any:
    """Build the runtime core. One place, so tests can substitute a stand-in."""
    from hma_ros.runtime.runner import WorldModelRunner

    return WorldModelRunner.from_checkpoint(checkpoint, robot, backend=backend)


@dataclass
class Counters:
    """What /diagnostics reports besides the assembler's own stats."""

    frames_refused: int = 0
    actions_refused: int = 0
    steps: int = 0  # 2 Hz steps cut from the inputs
    steps_dropped: int = 0  # queue overflow (model too slow): the context restarts
    steps_actions_held: int = 0  # cut after max_action_wait without actions: last command held
    ticks: int = 0
    ticks_no_new_step: int = 0
    ticks_model_busy: int = 0
    predictions: int = 0
    prediction_errors: int = 0
    rollouts: int = 0
    rollouts_refused: int = 0


class WorldModelNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("world_model", **kwargs)
        self._declare_parameters()
        self._lock = threading.Lock()  # inputs and counters; held briefly
        self._model_lock = threading.Lock()  # serialises calls into the runner
        # One group per entity: rclpy's MultiThreadedExecutor busy-loops (holding the GIL and
        # starving the model) when two ready entities share a mutually exclusive group and one
        # of them runs long. The subscriptions share state only under _lock.
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._action_group = MutuallyExclusiveCallbackGroup()
        self._rollout_group = MutuallyExclusiveCallbackGroup()
        self._wake = threading.Event()  # set when a step is cut: the prediction thread runs at once
        self._stop_predicting = threading.Event()
        self._predictor: threading.Thread | None = None
        self.robot: RobotConfig | None = None
        self.runner: Any = None
        self.model_id = ""
        self._assembler: StepAssembler | None = None
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._timers: list[Any] = []
        self._service = None
        self._reset_state()

    # -- parameters -----------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        def p(name, default, text, read_only=False, lo=None, hi=None):
            d = ParameterDescriptor(description=text, read_only=read_only)
            if lo is not None and isinstance(default, int) and not isinstance(default, bool):
                d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
            elif lo is not None:
                d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi)]
            self.declare_parameter(name, default, d)

        reload = " (read at configure: cleanup + configure to change)"
        p("robot", "franka", "robot config name (config/robots/<robot>.yaml) or a YAML path" + reload, True)
        p("checkpoint", "", "checkpoint folder; empty = the robot config's model.checkpoint" + reload, True)
        p("backend", "torch", f"inference backend, one of {', '.join(BACKENDS)}" + reload, True)
        p("autostart", False, "configure and activate at startup (without a lifecycle manager)", True)
        p("horizon", 4, "2 Hz steps predicted on every tick", lo=1, hi=64)
        p("num_steps", 2, "unmasking/sampling steps per predicted frame (MaskGIT: 2 suffices)", lo=1, hi=64)
        p("max_candidates", 16, "largest num_candidates a rollout request may ask for", lo=1, hi=1024)
        p("max_rollout_horizon", 16, "largest horizon a rollout request may ask for", lo=1, hi=256)
        p("max_frame_age", 1.0, "seconds without a camera frame before diagnostics warn", lo=0.05, hi=60.0)
        p(
            "max_action_wait",
            2.0,
            "seconds of camera time a step waits for the action stream to catch up before it holds the last command",
            lo=0.0,
            hi=MAX_ACTION_WAIT,
        )
        p("rollout_wait", 5.0, "seconds a rollout waits for a running prediction", lo=0.0, hi=600.0)
        p("publish_frames", True, "put the predicted images into /hma/predicted_frames")
        p("publish_preview", True, "publish /hma/preview (observed frame + predicted frames side by side)")
        p("diagnostics_period", 1.0, "seconds between /diagnostics messages", True, lo=0.1, hi=60.0)

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _reset_state(self) -> None:
        self.counters = Counters()
        self._latencies: deque[float] = deque(maxlen=50)
        self._prediction_times: deque[float] = deque(maxlen=20)
        self._frame_times: deque[float] = deque(maxlen=50)  # wall receipt times, for the input rate
        self._last_frame_stamp: float | None = None
        self._last_frame_wall = 0.0
        self._last_used_stamp: float | None = None  # stamp of the newest step cut
        self._steps: deque[Step] = deque()  # cut, not yet observed by the runner (bounded: MAX_QUEUED_STEPS)
        self._size_warned = False
        self._newest_stamp: dict[str, float] = {}  # per input topic: streams may lag each other
        self.time_resets = 0

    # -- lifecycle ------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        backend = self._param("backend")
        if backend not in BACKENDS:
            log.error(f"configure failed: backend {backend!r} is not one of {list(BACKENDS)}")
            return TransitionCallbackReturn.FAILURE
        try:
            robot = load_robot_config(self._param("robot"))
        except RobotConfigError as e:
            log.error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        checkpoint = Path(self._param("checkpoint")).expanduser() if self._param("checkpoint") else None
        checkpoint = checkpoint or robot.checkpoint_path()
        if not checkpoint.is_dir():
            log.error(f"configure failed: checkpoint folder {checkpoint} does not exist")
            return TransitionCallbackReturn.FAILURE
        t0 = time.perf_counter()
        try:
            runner = load_runner(checkpoint, robot, backend)
        except Exception as e:  # noqa: BLE001 - a corrupt checkpoint can fail in many ways; report it once
            log.error(f"configure failed: cannot load checkpoint {checkpoint}: {type(e).__name__}: {e}")
            return TransitionCallbackReturn.FAILURE
        self.robot, self.runner = robot, runner
        self.model_id = str(getattr(runner, "model_id", "") or checkpoint.name)
        self._assembler = StepAssembler(
            robot.action_dim, robot.control_hz, MODEL_HZ, max_frame_age=1e9, frame_buffer_s=MAX_ACTION_WAIT + 1.0
        )
        self._reset_state()
        self._pubs = {
            "frames": self.create_lifecycle_publisher(PredictedFrames, "/hma/predicted_frames", 10),
            "preview": self.create_lifecycle_publisher(Image, "/hma/preview", 10),
            "trajectory": self.create_lifecycle_publisher(JointTrajectory, "/hma/predicted_trajectory", 10),
            "diagnostics": self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10),
        }
        log.info(
            f"configured: robot {robot.robot} (embodiment {robot.embodiment}, {robot.action_dim} action dims "
            f"at {robot.control_hz:g} Hz), model {self.model_id} on {backend} in {time.perf_counter() - t0:.2f} s"
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        robot = self.robot
        self._subs = [
            self.create_subscription(
                Image,
                robot.camera.topic,
                self._on_image,
                CAMERA_QOS,
                callback_group=self._camera_group,
            ),
            self.create_subscription(
                JointState,
                robot.action.topic,
                self._on_action,
                max(50, math.ceil(ACTION_QUEUE_S * robot.control_hz)),
                callback_group=self._action_group,
            ),
        ]
        # The model runs in its own thread, not in an executor callback: a cut step wakes it at
        # once (the camera->prediction delay is the model's time), and it also wakes at 2 Hz
        # for steps a busy tick left. The executor only ever runs short callbacks.
        self._stop_predicting.clear()
        self._predictor = threading.Thread(target=self._predict_loop, name="hma_predict", daemon=True)
        self._predictor.start()
        self._timers = [self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics)]
        self._service = self.create_service(
            Rollout, "/hma/rollout", self._on_rollout, callback_group=self._rollout_group
        )
        self.get_logger().info(
            f"active: camera {robot.camera.topic}, actions {robot.action.topic}; predicting "
            f"{self._param('horizon')} steps at {MODEL_HZ:g} Hz; serving /hma/rollout"
        )
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        self.get_logger().info("inactive: inputs, predictions and /hma/rollout stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_configured()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        self._release_configured()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active()
        self._release_configured()
        return TransitionCallbackReturn.SUCCESS

    def _release_active(self) -> None:
        if self._predictor is not None:
            self._stop_predicting.set()
            self._wake.set()
            self._predictor.join(timeout=60.0)  # a running prediction finishes first
            self._predictor = None
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._timers:
            self.destroy_timer(timer)
        if self._service is not None:
            self.destroy_service(self._service)
        self._subs, self._timers, self._service = [], [], None

    def _release_configured(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        with self._model_lock:
            self.runner = None
        self._assembler = None

    # -- inputs (subscription callbacks: convert, then a brief lock) ------------------------
    def _stamp_or_now(self, stamp) -> float:
        t = stamp_to_sec(stamp)
        return t if t > 0 else self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, msg: Image) -> None:
        size = self._model_size()
        try:
            frame = image_to_numpy(msg, size=size)
        except ConversionError as e:
            with self._lock:
                self.counters.frames_refused += 1
            self.get_logger().warning(f"camera frame refused: {e}", throttle_duration_sec=5.0)
            return
        cam = self.robot.camera
        if (msg.width, msg.height) != (cam.width, cam.height) and not self._size_warned:
            self._size_warned = True
            self.get_logger().warning(
                f"camera publishes {msg.width}x{msg.height}, the robot config says {cam.width}x{cam.height}: "
                f"frames are centre-cropped and resized to {size[1]}x{size[0]}"
            )
        stamp = self._stamp_or_now(msg.header.stamp)
        with self._lock:
            self._detect_time_jump("camera", stamp)
            try:
                self._assembler.add_frame(frame, stamp)  # ValueError: stamp behind the last frame
            except ValueError as e:
                self.counters.frames_refused += 1
                self.get_logger().warning(f"camera frame refused: {e}", throttle_duration_sec=5.0)
                return
            self._last_frame_stamp = stamp
            self._last_frame_wall = time.monotonic()
            self._frame_times.append(self._last_frame_wall)
            self._cut_steps()

    def _cut_steps(self) -> None:
        """Under ``_lock``: close every 2 Hz step whose frame and actions have both arrived.

        Steps are cut on the camera's own time base, not on the node's clock, so a recording
        replayed at any rate (or a sim clock) yields the same 0.5 s steps as the live robot.
        A step is cut at the first frame half a second after the previous step (a new context
        starts at the newest frame the actions have reached), once the action stream has
        reached that frame's time: the camera (best effort) and the actions (reliable, queued)
        can arrive seconds apart on a loaded machine, and a step cut early would carry stale
        commands. After ``max_action_wait`` seconds of camera time without actions (a silent
        command topic) the step is cut holding the last command.
        """
        asm = self._assembler
        while True:
            last = self._last_used_stamp
            if last is None:
                stamp = asm.newest_covered_frame_stamp()
                stamp = asm.next_frame_stamp() if stamp is None else stamp
            else:
                stamp = asm.next_frame_stamp(last + STEP_PERIOD - STEP_TOLERANCE)
            if stamp is None:
                return
            if not asm.actions_cover(stamp):
                if asm.newest_frame_stamp - stamp < self._param("max_action_wait"):
                    return  # the next action (or frame) retries
                self.counters.steps_actions_held += 1
            step = asm.tick(stamp)
            if step is None:  # no action history covering the interval yet
                return
            if last is not None and stamp > last + 1.5 * STEP_PERIOD:
                step = Step(step.stamp, step.frame, None)  # a gap in the camera stream: new context
            self._last_used_stamp = stamp
            self.counters.steps += 1
            if len(self._steps) >= MAX_QUEUED_STEPS:  # the model cannot keep up: restart from here
                self._steps.clear()
                self.counters.steps_dropped += MAX_QUEUED_STEPS
                step = Step(step.stamp, step.frame, None)
            self._steps.append(step)
            self._wake.set()

    def _on_action(self, msg: JointState) -> None:
        try:
            action = joint_positions(msg, self.robot.action.names)
            stamp = self._stamp_or_now(msg.header.stamp)
            with self._lock:
                self._detect_time_jump("action", stamp)
                self._assembler.add_action(action, stamp)  # ValueError: stale stamp (counted)
                self._cut_steps()
        except ValueError as e:  # ConversionError too
            with self._lock:
                self.counters.actions_refused += 1
            self.get_logger().warning(f"action refused: {e}", throttle_duration_sec=5.0)

    def _detect_time_jump(self, topic: str, stamp: float) -> None:
        """Under ``_lock``: a stamp far behind the newest one on the same topic (a looped
        recording, a restarted sim clock) starts a new context instead of mixing two timelines.

        Each topic is compared with itself: one stream lagging the other is not a jump.
        """
        newest = self._newest_stamp.get(topic)
        if newest is not None and stamp < newest - TIME_JUMP:
            self.get_logger().info(
                f"{topic} time jumped back {newest - stamp:.1f} s (recording looped or clock reset): "
                "starting a new context"
            )
            self._assembler.reset()
            self._last_frame_stamp = self._last_used_stamp = None
            self._steps.clear()  # the next step carries no action: the runner starts a new context
            self._newest_stamp.clear()
            self.time_resets += 1
        self._newest_stamp[topic] = max(self._newest_stamp.get(topic, stamp), stamp)

    def _model_size(self) -> tuple[int, int]:
        size = getattr(self.runner, "image_size", None)
        return tuple(size) if size else (self.robot.camera.height, self.robot.camera.width)

    # -- 2 Hz prediction --------------------------------------------------------------------
    def _predict_loop(self) -> None:
        """The prediction thread: a tick whenever a step is cut (or 0.5 s passed), until deactivated."""
        while not self._stop_predicting.is_set():
            self._wake.wait(STEP_PERIOD)
            self._wake.clear()  # a step cut during the tick sets it again: the next tick follows at once
            if self._stop_predicting.is_set():
                return
            try:
                self._on_tick()
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one bad tick
                self.get_logger().error(f"prediction tick failed: {type(e).__name__}: {e}", throttle_duration_sec=5.0)

    def _on_tick(self) -> None:
        """Feed the queued steps to the runner, then predict from the newest."""
        if not self._model_lock.acquire(blocking=False):  # a rollout is running: steps wait
            with self._lock:
                self.counters.ticks_model_busy += 1
            return
        try:
            with self._lock:
                self.counters.ticks += 1
                steps = list(self._steps)
                self._steps.clear()
                if not steps:
                    self.counters.ticks_no_new_step += 1
            if not steps or self.runner is None:
                return
            t0 = time.perf_counter()
            for step in steps:  # action_before None starts a new context inside the runner
                self.runner.observe(step.frame, step.action_before, step.stamp)
            if not self.runner.ready:
                return
            horizon = self._param("horizon")
            if hasattr(self.runner, "num_steps"):
                self.runner.num_steps = self._param("num_steps")
            prediction = self.runner.predict(horizon)
            latency = time.perf_counter() - t0
        except ValueError as e:
            with self._lock:
                self.counters.prediction_errors += 1
            self.get_logger().warning(f"prediction skipped: {e}", throttle_duration_sec=5.0)
            return
        except Exception as e:  # noqa: BLE001 - keep serving; the error is reported, throttled
            with self._lock:
                self.counters.prediction_errors += 1
            self.get_logger().error(f"prediction failed: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
            return
        finally:
            self._model_lock.release()
        with self._lock:
            self.counters.predictions += 1
            self._latencies.append(latency)
            self._prediction_times.append(time.monotonic())
        self._publish_prediction(steps[-1].stamp, steps[-1].frame, prediction, horizon)

    def _publish_prediction(self, stamp: float, observed: np.ndarray, prediction: Any, horizon: int) -> None:
        robot = self.robot
        frames = np.asarray(prediction.frames)
        if frames.ndim != 4 or frames.shape[0] != horizon or frames.dtype != np.uint8:
            self.get_logger().error(
                f"runner returned frames {frames.dtype}{frames.shape}, expected uint8 ({horizon}, h, w, 3)",
                throttle_duration_sec=30.0,
            )
            return
        msg = PredictedFrames()
        msg.header.stamp = sec_to_stamp(stamp)
        msg.header.frame_id = robot.camera.frame_id
        msg.model_id, msg.embodiment = self.model_id, robot.embodiment
        msg.horizon, msg.step_period = int(horizon), STEP_PERIOD
        future = [sec_to_stamp(stamp + (i + 1) * STEP_PERIOD) for i in range(horizon)]
        msg.stamps = future
        if self._param("publish_frames"):
            msg.frames = [
                numpy_to_image(f, "rgb8", t, robot.camera.frame_id) for f, t in zip(frames, future, strict=True)
            ]
        actions = self._native_actions(prediction.actions, horizon)
        msg.action_dim, msg.actions_per_step = robot.action_dim, robot.stride
        msg.action_period = 1.0 / robot.control_hz
        msg.action_names = list(robot.action.names)
        if actions is not None:
            msg.actions = actions.reshape(-1).tolist()
            self._pubs["trajectory"].publish(self._trajectory(stamp, actions))
        self._pubs["frames"].publish(msg)
        if self._param("publish_preview"):
            strip = np.concatenate([observed, *frames], axis=1)  # (h, (1 + H) w, 3)
            self._pubs["preview"].publish(numpy_to_image(strip, "rgb8", msg.header.stamp, robot.camera.frame_id))

    def _native_actions(self, actions: Any, horizon: int) -> np.ndarray | None:
        """Model actions (H, stride * action_dim) -> native-rate rows (H * stride, action_dim)."""
        if actions is None:
            return None
        a = np.asarray(actions, np.float32)
        if a.size != horizon * self.robot.stride * self.robot.action_dim:
            self.get_logger().warning(
                f"runner returned actions of shape {a.shape}, expected ({horizon}, "
                f"{self.robot.stride * self.robot.action_dim}); not published",
                throttle_duration_sec=30.0,
            )
            return None
        return a.reshape(-1, self.robot.action_dim)

    def _trajectory(self, stamp: float, actions: np.ndarray) -> JointTrajectory:
        traj = JointTrajectory()
        traj.header.stamp = sec_to_stamp(stamp)
        traj.joint_names = list(self.robot.action.names)
        period = 1.0 / self.robot.control_hz
        for k, row in enumerate(actions):
            sec, nsec = divmod(int(round(k * period * 1e9)), 1_000_000_000)
            traj.points.append(
                JointTrajectoryPoint(positions=row.tolist(), time_from_start=Duration(sec=sec, nanosec=nsec))
            )
        return traj

    # -- /hma/rollout -------------------------------------------------------------------------
    def _on_rollout(self, request: Rollout.Request, response: Rollout.Response) -> Rollout.Response:
        t0 = time.perf_counter()
        try:
            args, context_stamp = self._validate_rollout(request)
        except ValueError as e:
            return self._refuse(response, str(e))
        if not self._model_lock.acquire(timeout=self._param("rollout_wait")):
            return self._refuse(response, "model busy: a prediction did not finish within rollout_wait")
        try:
            if self.runner is None:
                return self._refuse(response, "node is not configured")
            if args["context"] is None and not self.runner.ready:
                return self._refuse(response, "not enough live context yet (waiting for camera and actions)")
            t1 = time.perf_counter()
            result = self.runner.rollout(**args)
            inference = time.perf_counter() - t1
        except ValueError as e:
            return self._refuse(response, f"runner refused the request: {e}")
        except Exception as e:  # noqa: BLE001 - report, keep serving
            self.get_logger().error(f"rollout failed: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
            return self._refuse(response, f"rollout failed: {type(e).__name__}: {e}")
        finally:
            self._model_lock.release()
        robot = self.robot
        n, h = args["candidate_actions"].shape[:2]
        if context_stamp is None:
            with self._lock:
                context_stamp = self._last_used_stamp or 0.0
        response.success = True
        response.num_candidates, response.horizon = n, h
        response.action_dim, response.actions_per_step = robot.action_dim, robot.stride
        response.context_stamp = sec_to_stamp(context_stamp)
        if request.return_frames and result.frames is not None:
            frames = np.asarray(result.frames)  # (N, H, h, w, 3)
            stamps = [sec_to_stamp(context_stamp + (i + 1) * STEP_PERIOD) for i in range(h)]
            response.frames = [
                numpy_to_image(frames[c, i], "rgb8", stamps[i], robot.camera.frame_id)
                for c in range(n)
                for i in range(h)
            ]
        if result.actions is not None:
            response.predicted_actions = np.asarray(result.actions, np.float32).reshape(-1).tolist()
        if getattr(result, "costs", None) is not None and args["goal"] is not None:
            response.costs = np.asarray(result.costs, np.float32).reshape(-1).tolist()
        response.inference_time = inference
        response.total_time = time.perf_counter() - t0
        with self._lock:
            self.counters.rollouts += 1
        return response

    def _validate_rollout(self, req: Rollout.Request) -> tuple[dict[str, Any], float | None]:
        """Request -> (runner.rollout kwargs, stamp of the request's newest context frame or None
        for the live context); ValueError says what is wrong."""
        if self.robot is None:
            raise ValueError("node is not configured")
        robot = self.robot
        n, h, a, s = req.num_candidates, req.horizon, req.action_dim, req.actions_per_step or robot.stride
        max_n, max_h = self._param("max_candidates"), self._param("max_rollout_horizon")
        if not 1 <= n <= max_n:
            raise ValueError(f"num_candidates={n} must be in [1, {max_n}] (parameter max_candidates)")
        if not 1 <= h <= max_h:
            raise ValueError(f"horizon={h} must be in [1, {max_h}] (parameter max_rollout_horizon)")
        if a != robot.action_dim:
            raise ValueError(f"action_dim={a}, but robot {robot.robot} has {robot.action_dim} ({robot.action.names})")
        if s != robot.stride:
            raise ValueError(
                f"actions_per_step={s}, but {robot.robot} runs at {robot.control_hz:g} Hz: "
                f"{robot.stride} native actions per 2 Hz step"
            )
        cand = np.asarray(req.candidate_actions, np.float32)
        if cand.size != n * h * s * a:
            raise ValueError(
                f"candidate_actions has {cand.size} values, expected num_candidates*horizon*actions_per_step*"
                f"action_dim = {n}*{h}*{s}*{a} = {n * h * s * a}"
            )
        if not np.isfinite(cand).all():
            raise ValueError("candidate_actions contains NaN or inf")
        num_steps = req.num_steps or self._param("num_steps")
        if num_steps > 64:
            raise ValueError(f"num_steps={num_steps} is above 64")
        size = self._model_size()
        context, context_stamp = None, None
        if req.context_frames:
            t = len(req.context_frames)
            frames = []
            for i, img in enumerate(req.context_frames):
                try:
                    frames.append(image_to_numpy(img, size=size))
                except ConversionError as e:
                    raise ValueError(f"context_frames[{i}]: {e}") from e
            ctx_actions = np.asarray(req.context_actions, np.float32)
            if ctx_actions.size != t * s * a:
                raise ValueError(
                    f"context_actions has {ctx_actions.size} values, expected len(context_frames)*"
                    f"actions_per_step*action_dim = {t}*{s}*{a} = {t * s * a}"
                )
            if not np.isfinite(ctx_actions).all():
                raise ValueError("context_actions contains NaN or inf")
            context = (np.stack(frames), ctx_actions.reshape(t, s * a))
            context_stamp = stamp_to_sec(req.context_frames[-1].header.stamp)
        elif req.context_actions:
            raise ValueError("context_actions given without context_frames")
        goal = None
        if len(req.goal.data):
            try:
                goal = image_to_numpy(req.goal, size=size)
            except ConversionError as e:
                raise ValueError(f"goal: {e}") from e
        kwargs = {
            "candidate_actions": cand.reshape(n, h, s * a),
            "context": context,
            "goal": goal,
            "num_steps": int(num_steps),
            "seed": int(req.seed) if req.seed >= 0 else None,
            "return_frames": bool(req.return_frames),
        }
        return kwargs, context_stamp

    def _refuse(self, response: Rollout.Response, why: str) -> Rollout.Response:
        with self._lock:
            self.counters.rollouts_refused += 1
        self.get_logger().warning(f"rollout refused: {why}", throttle_duration_sec=1.0)
        response.success, response.message = False, why
        return response

    # -- /diagnostics -------------------------------------------------------------------------
    def diagnostics(self) -> DiagnosticStatus:
        with self._lock:
            c = Counters(**vars(self.counters))
            stats = vars(self._assembler.stats).copy() if self._assembler else {}
            fill = self._assembler.action_fill if self._assembler else 0.0
            lat = list(self._latencies)
            times = list(self._prediction_times)
            camera_times = list(self._frame_times)
            frame_age = time.monotonic() - self._last_frame_wall if self._last_frame_stamp is not None else None

        def rate(ts: list[float]) -> float:
            return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0

        status = DiagnosticStatus(name="hma_ros: world_model", hardware_id=self.model_id)
        ready = bool(getattr(self.runner, "ready", False))
        if frame_age is None or frame_age > self._param("max_frame_age"):
            status.level, status.message = DiagnosticStatus.WARN, "no camera frames"
        elif c.prediction_errors and c.predictions == 0:
            status.level, status.message = DiagnosticStatus.ERROR, "predictions failing"
        elif not ready:
            status.level, status.message = DiagnosticStatus.WARN, "collecting context"
        else:
            status.level, status.message = DiagnosticStatus.OK, "predicting"
        values = {
            "robot": self.robot.robot if self.robot else "",
            "context_ready": ready,
            "prediction_rate_hz": f"{rate(times):.2f}",
            "camera_rate_hz": f"{rate(camera_times):.2f}",
            "latency_last_ms": f"{lat[-1] * 1e3:.1f}" if lat else "",
            "latency_mean_ms": f"{np.mean(lat) * 1e3:.1f}" if lat else "",
            "latency_max_ms": f"{np.max(lat) * 1e3:.1f}" if lat else "",
            "camera_frame_age_s": f"{frame_age:.2f}" if frame_age is not None else "",
            "action_buffer_fill": f"{fill:.2f}",
            "context_resets": self.time_resets,
            **{k: v for k, v in stats.items()},
            **vars(c),
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray(status=[self.diagnostics()])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._pubs["diagnostics"].publish(msg)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = WorldModelNode()
    executor = MultiThreadedExecutor(num_threads=8)  # headroom: a saturated pool makes rclpy resubmit tasks in a loop
    executor.add_node(node)
    code = 0
    try:
        if node.get_parameter("autostart").value:
            ok = TransitionCallbackReturn.SUCCESS
            code = 0 if node.trigger_configure() == ok and node.trigger_activate() == ok else 1
        if code == 0:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # On SIGINT rclpy shuts the context down and runs the shutdown transition itself.
        if rclpy.ok():
            node.trigger_shutdown()
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
