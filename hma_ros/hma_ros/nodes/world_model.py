"""The HMA world model as a ROS 2 lifecycle node: a thin shell around the ROS-free runtime.

configure  loads the robot config (config/robots/<robot>.yaml) and the checkpoint, warms the
           model up and measures its cost. A failure (no such robot, a missing or corrupt
           checkpoint, TensorRT absent) leaves the node up and unconfigured, with the reason in
           the log and on /diagnostics; fix the parameter and configure again.
activate   subscribes to the camera (sensor-data QoS) and the action topic and starts the
           model worker: live predictions and /hma/rollout are served.
deactivate stops both (queued rollouts are answered "inactive"); cleanup releases the model.

Concurrency (docs/executors.md, STYLE.md 12): the process spins one SingleThreadedExecutor
(``nodes/spin.py``). Subscription callbacks only convert a message and feed
``runtime.chunking.StepCutter``, which cuts 2 Hz steps on the camera's time base; cut steps go
to ``runtime.worker.ModelWorker``, the one thread that owns the model. It serves live steps
first and rollouts in frame-sized, batched slices between them, and publishes predictions
itself. /hma/rollout is a coroutine: it validates the request (``runtime.requests``), submits
it to the worker and awaits the answer, so the executor keeps serving the topics meanwhile.

    python -m hma_ros.nodes.world_model --ros-args -p robot:=franka -p autostart:=true
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.task import Future as RosFuture
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from hma_ros.nodes import spin
from hma_ros.nodes.convert import image_to_numpy, joint_positions, numpy_to_image, sec_to_stamp, stamp_to_sec
from hma_ros.runtime.chunking import StepCutter
from hma_ros.runtime.requests import ActionBounds, RolloutLimits, parse_rollout_request
from hma_ros.runtime.robot_config import MODEL_HZ, RobotConfig, RobotConfigError, load_robot_config
from hma_ros.runtime.worker import LivePrediction, ModelWorker, RolloutRefusedError, Runner
from hma_ros_interfaces.msg import PredictedFrames
from hma_ros_interfaces.srv import Rollout

BACKENDS = ("torch", "onnxruntime", "tensorrt")
STEP_PERIOD = 1.0 / MODEL_HZ
MAX_ACTION_WAIT = 10.0  # s: upper bound of max_action_wait (frames are buffered that long)
# Sensor-data QoS (best effort: the newest frames win, nothing is resent), but 10 deep, not 5:
# frames are buffered until the commands catch up.
CAMERA_QOS = QoSProfile(
    history=qos_profile_sensor_data.history,
    depth=10,
    reliability=qos_profile_sensor_data.reliability,
    durability=qos_profile_sensor_data.durability,
)
ACTION_QUEUE_S = 3.0  # s of native-rate actions the subscription queue holds (a reliable topic may lag)
TICK_BUDGET = 0.8 * STEP_PERIOD  # a live tick estimated above this could not keep 2 Hz: refused
RECENT = 5.0  # s: how long a refused action or a discarded prediction colours /diagnostics
#: Parameters that choose what configure loads: settable only while unconfigured.
RELOAD = ("robot", "checkpoint", "backend", "device")


def load_runner(checkpoint: Path, robot: RobotConfig, backend: str, device: str = "cpu") -> Runner:
    """Build the runtime core. One place, so tests can substitute a stand-in."""
    from hma_ros.runtime.runner import WorldModelRunner

    options = {"device": device} if device != "cpu" else None
    return WorldModelRunner.from_checkpoint(checkpoint, robot, backend=backend, backend_options=options)


@dataclass
class Counters:
    """What the node's callbacks count (executor thread only); the worker counts the rest."""

    frames_refused: int = 0
    actions_refused: int = 0
    actions_out_of_range: int = 0
    rollouts: int = 0
    rollouts_refused: int = 0


class WorldModelNode(LifecycleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("world_model", **kwargs)
        self.robot: RobotConfig | None = None
        self.runner: Runner | None = None
        self.worker: ModelWorker | None = None
        self.cutter: StepCutter | None = None
        self.bounds: ActionBounds | None = None
        self.model_id = ""
        self.state = "unconfigured"  # the lifecycle state this node's callbacks completed
        self.config_error = ""  # why the last configure failed
        self.counters = Counters()
        self.pending_rollouts = 0  # coroutines awaiting the worker
        self._last_refusal = self._last_frame_wall = -math.inf
        self._invalid_seen = (0, -math.inf)  # (worker's predictions_invalid, when it last grew)
        self._frame_times: list[float] = []
        self._size_warned = False
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._declare_parameters()
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        # Always up, whatever the lifecycle state: /diagnostics says why a configure failed, and
        # /hma/rollout answers "not configured" or "inactive" instead of vanishing.
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self._param("diagnostics_period"), self._publish_diagnostics)
        # Reentrant: each request is a coroutine awaiting the worker, and many may wait at once
        # (batched together). In the default, mutually exclusive group one waiting request would
        # block the next, and the topics too: a ready entity whose group is busy makes rclpy's
        # executor spin without sleeping.
        self._service = self.create_service(
            Rollout, "/hma/rollout", self._on_rollout, callback_group=ReentrantCallbackGroup()
        )

    # -- parameters -----------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        def p(name, default, text, read_only=False, lo=None, hi=None):
            d = ParameterDescriptor(description=text, read_only=read_only)
            if lo is not None and isinstance(default, int) and not isinstance(default, bool):
                d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
            elif lo is not None:
                d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi)]
            self.declare_parameter(name, default, d)

        reload = " (settable while unconfigured: cleanup, set, configure)"
        p("robot", "franka", "robot config name (config/robots/<robot>.yaml) or a YAML path" + reload)
        p("checkpoint", "", "checkpoint folder; empty = the robot config's model.checkpoint" + reload)
        p("backend", "torch", f"inference backend, one of {', '.join(BACKENDS)}" + reload)
        p("device", "cpu", "where the model runs: cpu, cuda or cuda:N (tensorrt: always a GPU)" + reload)
        p("autostart", False, "configure and activate at startup (without a lifecycle manager)", True)
        p(
            "executor",
            "single",
            f"rclpy executor of the process, one of {', '.join(spin.EXECUTORS)}: single is the measured choice "
            "(docs/executors.md); the others exist to repeat that comparison",
            True,
        )
        p("horizon", 4, "2 Hz steps predicted on every tick (refused if a tick could not keep 2 Hz)", lo=1, hi=16)
        p("num_steps", 2, "unmasking/sampling steps per predicted frame (MaskGIT: 2 suffices)", lo=1, hi=16)
        p("max_candidates", 16, "largest num_candidates a rollout request may ask for", lo=1, hi=256)
        p("max_rollout_horizon", 16, "largest horizon a rollout request may ask for", lo=1, hi=64)
        p(
            "max_rollout_time",
            10.0,
            "largest estimated model time (s) of one rollout request; costlier requests are refused",
            lo=0.1,
            hi=120.0,
        )
        p(
            "rollout_slice_time",
            0.2,
            "seconds one slice of rollout work may hold the model (a live tick waits at most about this); "
            "rollouts are batched and split into slices of this estimated cost",
            lo=0.01,
            hi=STEP_PERIOD,
        )
        p(
            "live_threads",
            1,
            "intra-op threads of a live tick (1: robust beside other busy processes, docs/executors.md)",
            True,
            lo=1,
            hi=64,
        )
        p("rollout_threads", 0, "intra-op threads of rollouts (0: every core)", True, lo=0, hi=64)
        p("rollout_queue_size", 16, "rollout requests waiting beyond this are refused as busy", lo=1, hi=256)
        p(
            "action_range_factor",
            3.0,
            "actions (topics and requests) beyond this multiple of the recorded range (checkpoint stats: "
            "mean +- 3 std) are refused",
            lo=1.0,
            hi=1e6,
        )
        p("max_frame_age", 1.0, "seconds without a camera frame before diagnostics warn", lo=0.05, hi=60.0)
        p(
            "max_action_wait",
            2.0,
            "seconds of camera time a step waits for the action stream to catch up before it holds the last command",
            lo=0.0,
            hi=MAX_ACTION_WAIT,
        )
        p("publish_frames", True, "put the predicted images into /hma/predicted_frames")
        p("publish_preview", True, "publish /hma/preview (observed frame + predicted frames side by side)")
        p("diagnostics_period", 1.0, "seconds between /diagnostics messages", True, lo=0.1, hi=60.0)

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _check_parameters(self, params: list[Any]) -> SetParametersResult:
        for param in params:
            if param.name in RELOAD and self.state != "unconfigured":
                return SetParametersResult(
                    successful=False,
                    reason=f"{param.name} is read at configure: deactivate and clean up the node first "
                    f"(ros2 lifecycle set {self.get_fully_qualified_name()} cleanup), then set it",
                )
            if param.name in ("horizon", "num_steps") and self.worker is not None:
                horizon = param.value if param.name == "horizon" else self.worker.horizon
                steps = param.value if param.name == "num_steps" else self.worker.num_steps
                tick = self.worker.tick_estimate(horizon, steps)
                if tick > TICK_BUDGET:
                    return SetParametersResult(
                        successful=False,
                        reason=f"horizon {horizon} x num_steps {steps} would take ~{tick:.2f} s per 2 Hz tick on "
                        f"this machine (budget {TICK_BUDGET:g} s): predictions could not keep 2 Hz",
                    )
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params: list[Any]) -> None:
        worker = self.worker
        for param in params:
            if worker is not None and param.name in ("horizon", "num_steps"):
                setattr(worker, param.name, int(param.value))
            elif worker is not None and param.name == "max_rollout_time":
                worker.max_rollout_seconds = float(param.value)
            elif worker is not None and param.name == "rollout_queue_size":
                worker.queue_size = int(param.value)
            elif worker is not None and param.name == "rollout_slice_time":
                worker.step_budget = float(param.value)
            elif param.name == "max_action_wait" and self.cutter is not None:
                self.cutter.max_action_wait = float(param.value)
            elif param.name == "action_range_factor" and self.runner is not None:
                self.bounds = self._bounds(self.runner)

    def _bounds(self, runner: Runner) -> ActionBounds:
        spec = runner.spec
        names = self.robot.action.names if self.robot else spec.action_names
        return ActionBounds.from_stats(spec.action_mean, spec.action_std, self._param("action_range_factor"), names)

    # -- lifecycle ------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        t0 = time.perf_counter()
        try:
            self._configure()
        except ConfigureError as e:
            self.config_error = str(e)
            self.get_logger().error(f"configure failed: {e}")
            self._release_configured()
            return TransitionCallbackReturn.FAILURE
        self.config_error = ""
        self.state = "inactive"
        robot, worker = self.robot, self.worker
        self.get_logger().info(
            f"configured: robot {robot.robot} (embodiment {robot.embodiment}, {robot.action_dim} action dims at "
            f"{robot.control_hz:g} Hz), model {self.model_id} on {self._param('backend')}/{self._param('device')} in "
            f"{time.perf_counter() - t0:.2f} s; {worker.live_frame_seconds * 1e3:.0f} ms per live frame, "
            f"rollout jobs of up to {worker.max_job_candidates()} candidates"
        )
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        backend, device = self._param("backend"), self._param("device")
        if backend not in BACKENDS:
            raise ConfigureError(f"backend {backend!r} is not one of {list(BACKENDS)}")
        try:
            robot = load_robot_config(self._param("robot"))
            checkpoint = Path(self._param("checkpoint")).expanduser() if self._param("checkpoint") else None
            checkpoint = checkpoint or robot.checkpoint_path()
        except RobotConfigError as e:
            raise ConfigureError(str(e)) from None
        if not checkpoint.is_dir():
            raise ConfigureError(f"checkpoint folder {checkpoint} does not exist")

        def load() -> Runner:  # in the worker thread: all torch work happens there
            from hma_ros.runtime.backends import resolve_device

            try:
                resolve_device(device)
            except ValueError as e:  # BackendUnavailableError included: no such GPU here
                raise ConfigureError(str(e)) from None
            try:
                return load_runner(checkpoint, robot, backend, device)
            except Exception as e:  # noqa: BLE001 - a corrupt checkpoint can fail in many ways; report it once
                raise ConfigureError(f"cannot load checkpoint {checkpoint}: {type(e).__name__}: {e}") from None

        worker = ModelWorker(
            on_prediction=self._publish_prediction,
            on_error=self._on_worker_error,
            horizon=self._param("horizon"),
            num_steps=self._param("num_steps"),
            queue_size=self._param("rollout_queue_size"),
            max_rollout_seconds=self._param("max_rollout_time"),
            step_budget=self._param("rollout_slice_time"),
            live_threads=self._param("live_threads"),
            rollout_threads=self._param("rollout_threads"),
        )
        try:
            runner = worker.start(load)
        except ConfigureError:
            raise
        except Exception as e:  # noqa: BLE001 - a model that cannot run one frame is a failed configure
            raise ConfigureError(f"the model failed its warm-up: {type(e).__name__}: {e}") from None
        self.robot, self.runner = robot, runner
        self.model_id = str(getattr(runner, "model_id", "") or checkpoint.name)
        self.bounds = self._bounds(runner)
        self.worker = worker
        tick = worker.tick_estimate(worker.horizon, worker.num_steps)
        if tick > TICK_BUDGET:
            self.get_logger().warning(
                f"a live tick of horizon {worker.horizon} is estimated at {tick:.2f} s: predictions will fall "
                "below 2 Hz on this machine; lower horizon"
            )
        self._pubs = {
            "frames": self.create_lifecycle_publisher(PredictedFrames, "/hma/predicted_frames", 10),
            "preview": self.create_lifecycle_publisher(Image, "/hma/preview", 10),
            "trajectory": self.create_lifecycle_publisher(JointTrajectory, "/hma/predicted_trajectory", 10),
        }

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        robot = self.robot
        self.counters = Counters()
        self._frame_times, self._last_frame_wall = [], -math.inf
        self.cutter = StepCutter(
            robot.action_dim,
            robot.control_hz,
            MODEL_HZ,
            max_action_wait=self._param("max_action_wait"),
            max_action_wait_cap=MAX_ACTION_WAIT,
            on_time_jump=self.get_logger().info,
        )
        self.worker.activate()
        self._subs = [
            self.create_subscription(Image, robot.camera.topic, self._on_image, CAMERA_QOS),
            self.create_subscription(
                JointState, robot.action.topic, self._on_action, max(50, math.ceil(ACTION_QUEUE_S * robot.control_hz))
            ),
        ]
        self.state = "active"
        self.get_logger().info(
            f"active: camera {robot.camera.topic}, actions {robot.action.topic}; predicting "
            f"{self.worker.horizon} steps at {MODEL_HZ:g} Hz; serving /hma/rollout"
        )
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active("the world model was deactivated")
        self.state = "inactive"
        self.get_logger().info("inactive: inputs, predictions and /hma/rollout stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_configured()
        self.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active("the world model is shutting down")
        self._release_configured()
        self.state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_active("the world model hit an error")
        self._release_configured()
        self.state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _release_active(self, reason: str) -> None:
        """Stop serving first (the worker publishes), then the subscriptions."""
        if self.worker is not None and not self.worker.deactivate(reason, timeout=5.0):
            self.get_logger().error("the model worker did not stop within 5 s")
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self.cutter = None

    def _release_configured(self) -> None:
        if self.worker is not None and not self.worker.stop(timeout=5.0):
            self.get_logger().error("the model worker did not stop within 5 s")
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self.runner = self.worker = self.bounds = self.robot = None

    # -- inputs (executor thread: convert, cut, hand over) --------------------------------------
    def _stamp_or_now(self, stamp: Any) -> float:
        t = stamp_to_sec(stamp)
        return t if t > 0 else self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, msg: Image) -> None:
        cutter, worker = self.cutter, self.worker
        if cutter is None or worker is None:
            return
        try:
            frame = image_to_numpy(msg, size=self.runner.image_size)
            steps = cutter.add_frame(frame, self._stamp_or_now(msg.header.stamp))
        except ValueError as e:  # malformed image, or a stale / non-finite stamp
            self.counters.frames_refused += 1
            self.get_logger().warning(f"camera frame refused: {e}", throttle_duration_sec=5.0)
            return
        cam = self.robot.camera
        if (msg.width, msg.height) != (cam.width, cam.height) and not self._size_warned:
            self._size_warned = True
            h, w = self.runner.image_size
            self.get_logger().warning(
                f"camera publishes {msg.width}x{msg.height}, the robot config says {cam.width}x{cam.height}: "
                f"frames are centre-cropped and resized to {w}x{h}"
            )
        self._last_frame_wall = time.monotonic()
        self._frame_times = [*self._frame_times[-49:], self._last_frame_wall]
        worker.push_steps(steps)

    def _on_action(self, msg: JointState) -> None:
        cutter, worker = self.cutter, self.worker
        if cutter is None or worker is None:
            return
        try:
            action = joint_positions(msg, self.robot.action.names)
            if why := self.bounds.problem(action, "action"):
                self.counters.actions_out_of_range += 1
                self._last_refusal = time.monotonic()
                raise ValueError(why)
            steps = cutter.add_action(action, self._stamp_or_now(msg.header.stamp))
        except ValueError as e:  # missing joints, NaN, out of range, stale stamp
            self.counters.actions_refused += 1
            self.get_logger().warning(f"action refused: {e}", throttle_duration_sec=5.0)
            return
        worker.push_steps(steps)

    # -- live predictions (worker thread) ----------------------------------------------------------
    def _on_worker_error(self, kind: str, message: str) -> None:
        self.get_logger().error(message, throttle_duration_sec=5.0)

    def _publish_prediction(self, live: LivePrediction) -> None:
        robot, prediction, horizon = self.robot, live.prediction, live.horizon
        stamp, observed = live.step.stamp, live.step.frame
        frames = np.asarray(prediction.frames)
        if frames.ndim != 4 or frames.shape[0] != horizon or frames.dtype != np.uint8:
            raise ValueError(f"runner returned frames {frames.dtype}{frames.shape}, not uint8 ({horizon}, h, w, 3)")
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
        msg.action_dim, msg.actions_per_step = robot.action_dim, robot.stride
        msg.action_period = 1.0 / robot.control_hz
        msg.action_names = list(robot.action.names)
        if prediction.actions is not None:
            actions = np.asarray(prediction.actions, np.float32).reshape(-1, robot.action_dim)
            msg.actions = actions.reshape(-1).tolist()
            self._pubs["trajectory"].publish(self._trajectory(stamp, actions))
        self._pubs["frames"].publish(msg)
        if self._param("publish_preview"):
            strip = np.concatenate([observed, *frames], axis=1)  # (h, (1 + H) w, 3)
            self._pubs["preview"].publish(numpy_to_image(strip, "rgb8", msg.header.stamp, robot.camera.frame_id))

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

    # -- /hma/rollout (a coroutine on the executor: it awaits the worker) ---------------------------
    async def _on_rollout(self, request: Rollout.Request, response: Rollout.Response) -> Rollout.Response:
        t0 = time.perf_counter()
        robot, worker, runner = self.robot, self.worker, self.runner
        if self.state != "active" or worker is None:
            return self._refuse(response, f"the world model is {self.state}, not active")
        try:
            req = parse_rollout_request(
                request,
                robot_name=robot.robot,
                action_dim=robot.action_dim,
                stride=robot.stride,
                control_hz=robot.control_hz,
                limits=RolloutLimits(
                    self._param("max_candidates"), self._param("max_rollout_horizon"), self._param("num_steps")
                ),
                image_size=runner.image_size,
                bounds=self.bounds,
            )
            job = worker.submit(req)
        except ValueError as e:  # RolloutRefusedError too
            return self._refuse(response, str(e))
        self.pending_rollouts += 1
        try:
            answered = RosFuture()
            executor = self.executor

            def wake(_: Any) -> None:  # worker thread
                answered.set_result(None)
                if executor is not None:
                    executor.wake()

            job.add_done_callback(wake)
            await answered
            try:
                answer = job.result()
            except RolloutRefusedError as e:
                return self._refuse(response, str(e))
        finally:
            self.pending_rollouts -= 1
        result, n, h = answer.result, req.num_candidates, req.horizon
        context_stamp = answer.context_stamp
        response.success = True
        response.num_candidates, response.horizon = n, h
        response.action_dim, response.actions_per_step = robot.action_dim, robot.stride
        response.context_stamp = sec_to_stamp(context_stamp)
        if req.return_frames and result.frames is not None:
            stamps = [sec_to_stamp(context_stamp + (i + 1) * STEP_PERIOD) for i in range(h)]
            frame_id = robot.camera.frame_id
            response.frames = [
                numpy_to_image(result.frames[c, i], "rgb8", stamps[i], frame_id) for c in range(n) for i in range(h)
            ]
        if result.actions is not None:
            response.predicted_actions = np.asarray(result.actions, np.float32).reshape(-1).tolist()
        if result.costs is not None and req.goal is not None:
            response.costs = np.asarray(result.costs, np.float32).reshape(-1).tolist()
        response.inference_time = answer.model_seconds
        response.total_time = time.perf_counter() - t0
        self.counters.rollouts += 1
        return response

    def _refuse(self, response: Rollout.Response, why: str) -> Rollout.Response:
        self.counters.rollouts_refused += 1
        self.get_logger().warning(f"rollout refused: {why}", throttle_duration_sec=1.0)
        response.success, response.message = False, why
        return response

    # -- /diagnostics -------------------------------------------------------------------------
    def diagnostics(self) -> DiagnosticStatus:
        status = DiagnosticStatus(name="hma_ros: world_model", hardware_id=self.model_id)
        now = time.monotonic()
        worker, cutter = self.worker, self.cutter
        w = worker.snapshot() if worker is not None else {}
        frame_age = now - self._last_frame_wall if self._last_frame_wall > -math.inf else None
        ready = bool(self.runner is not None and self.runner.ready)
        if self.state == "unconfigured":
            status.level = DiagnosticStatus.ERROR if self.config_error else DiagnosticStatus.WARN
            status.message = f"unconfigured: {self.config_error}" if self.config_error else "unconfigured"
        elif self.state != "active":
            status.level, status.message = DiagnosticStatus.WARN, self.state
        elif frame_age is None or frame_age > self._param("max_frame_age"):
            status.level, status.message = DiagnosticStatus.WARN, "no camera frames"
        elif w.get("predictions_invalid") and self._recent_invalid(w):
            status.level, status.message = DiagnosticStatus.ERROR, "model output not finite: predictions discarded"
        elif w.get("prediction_errors") and not w.get("predictions"):
            status.level, status.message = DiagnosticStatus.ERROR, "predictions failing"
        elif now - self._last_refusal < RECENT:
            status.level, status.message = DiagnosticStatus.WARN, "actions out of range refused"
        elif not ready:
            status.level, status.message = DiagnosticStatus.WARN, "collecting context"
        else:
            status.level, status.message = DiagnosticStatus.OK, "predicting"
        times = self._frame_times
        camera_rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

        def ms(seconds: float | None) -> str:
            return f"{seconds * 1e3:.1f}" if seconds is not None else ""

        values = {
            "state": self.state,
            "robot": self.robot.robot if self.robot else self._param("robot"),
            "image_size": "x".join(map(str, self.runner.image_size[::-1])) if self.runner else "",
            "diagnostics_period": self._param("diagnostics_period"),
            "context_ready": ready,
            "prediction_rate_hz": f"{w.get('prediction_rate_hz', 0.0):.2f}",
            "camera_rate_hz": f"{camera_rate:.2f}",
            "latency_last_ms": ms(w.get("tick_last_s")),
            "latency_mean_ms": ms(w.get("tick_mean_s")),
            "latency_max_ms": ms(w.get("tick_max_s")),
            "camera_frame_age_s": f"{frame_age:.2f}" if frame_age is not None else "",
            "pending_rollouts": self.pending_rollouts,
            **(vars(cutter.assembler.stats) if cutter else {}),
            **(vars(cutter.stats) if cutter else {}),
            **{k: v for k, v in w.items() if not k.startswith(("tick_", "prediction_rate"))},
            **vars(self.counters),
        }
        if self.config_error:
            values["config_error"] = self.config_error
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status

    def _recent_invalid(self, w: dict[str, Any]) -> bool:
        """True within RECENT s of the worker discarding a non-finite prediction."""
        count, _ = self._invalid_seen
        if w["predictions_invalid"] != count:
            self._invalid_seen = (w["predictions_invalid"], time.monotonic())
        return time.monotonic() - self._invalid_seen[1] < RECENT

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray(status=[self.diagnostics()])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(msg)

    # -- process life ---------------------------------------------------------------------------------
    def autostart(self) -> bool:
        """configure + activate, as a lifecycle manager would; a failure leaves the node up."""
        ok = TransitionCallbackReturn.SUCCESS
        return self.trigger_configure() == ok and self.trigger_activate() == ok

    def stop(self) -> None:
        """The shutdown transition from whatever state the node is in (worker stopped first)."""
        if self.state not in ("finalized",):
            self.trigger_shutdown()


class ConfigureError(RuntimeError):
    """Why configure failed, in one line for the log and /diagnostics."""


def main(args: list[str] | None = None) -> int:
    signals = spin.StopSignals().install(watch_parent=True)
    spin.init(args)
    node = WorldModelNode()
    try:
        spinner = spin.ExecutorThread(node, kind=node.get_parameter("executor").value).start()
    except ValueError as e:
        node.get_logger().error(str(e))
        node.destroy_node()
        spin.shutdown()
        return 1
    try:
        if node.get_parameter("autostart").value and not signals:
            node.autostart()  # a failure is logged and on /diagnostics; the node stays up
        spin.wait_until(lambda: bool(signals) or not spinner.alive())
        if signals:
            node.get_logger().info(f"stopping: {signals.reason()}")
        node.stop()
        # Refused rollouts (the worker stopped) still get their answer before the executor goes.
        spin.wait_until(lambda: node.pending_rollouts == 0, timeout=0.5, period=0.01)
    finally:
        spinner.stop()
        node.destroy_node()
        spin.shutdown()
    if spinner.error is not None:
        rclpy.logging.get_logger("world_model").error(f"the executor failed: {spinner.error!r}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
