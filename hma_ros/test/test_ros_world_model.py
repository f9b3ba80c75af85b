"""The world_model lifecycle node, in-process.

Most tests use ``StandInRunner`` (test code only): it follows the ``WorldModelRunner`` contract
(``from_checkpoint``, ``observe``, ``ready``, ``predict``, ``rollout``, ``reset``) with trivial,
predictable arithmetic, so the node's wiring, validation and lifecycle are checked exactly and
fast. ``test_real_runner_*`` runs the real runner on a tiny random checkpoint.
"""

import json
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hma_ros_interfaces.msg")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from hma_ros.model.config import EmbodimentSpec  # noqa: E402
from hma_ros.nodes import world_model  # noqa: E402
from hma_ros.nodes.convert import image_to_numpy, numpy_to_image, sec_to_stamp, stamp_to_sec  # noqa: E402
from hma_ros.runtime.robot_config import load_robot_config  # noqa: E402
from hma_ros_interfaces.msg import PredictedFrames  # noqa: E402
from hma_ros_interfaces.srv import Rollout  # noqa: E402

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
FRANKA = load_robot_config("franka")
A, STRIDE = FRANKA.action_dim, FRANKA.stride


class StandInJob:
    def __init__(self, runner, candidate_actions):
        self.runner, self.candidate_actions = runner, candidate_actions
        self.frames_done = 0

    @property
    def num_candidates(self):
        return self.candidate_actions.shape[0]

    @property
    def horizon(self):
        return self.candidate_actions.shape[1]

    @property
    def done(self):
        return self.frames_done == self.horizon

    def step(self):
        self.frames_done += 1
        return self.done


class StandInRunner:
    """Test double for hma_ros.runtime.runner.WorldModelRunner (the runtime.worker.Runner protocol)."""

    image_size = (16, 16)
    spec = EmbodimentSpec(
        "franka", action_dim=A, control_hz=FRANKA.control_hz, action_mean=[0.0] * A, action_std=[10.0] * A
    )

    def __init__(self, robot):
        self.robot = robot
        self.observed = []
        self.model_id = "stand_in"
        self.num_steps = 2
        self.resets = 0

    @classmethod
    def from_checkpoint(cls, folder, robot, backend="torch"):
        json.loads((folder / "config.json").read_text())  # a corrupt file raises here
        return cls(robot)

    @property
    def ready(self):
        return len(self.observed) >= 2

    def observe(self, frame, action, stamp):
        if frame.shape != (*self.image_size, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.dtype}{frame.shape}")
        if action is not None and action.shape != (STRIDE * A,):
            raise ValueError(f"action shape {action.shape}")
        if action is None:  # like the runner: a step without its action starts a new context
            self.reset()
        self.observed.append((frame, action, stamp))

    def predict(self, horizon):
        last = self.observed[-1][0].astype(int)
        frames = np.stack([np.clip(last + i + 1, 0, 255).astype(np.uint8) for i in range(horizon)])
        action = self.observed[-1][1]
        actions = np.tile(action if action is not None else np.zeros(STRIDE * A, np.float32), (horizon, 1))
        return SimpleNamespace(frames=frames, actions=actions, stamps=None)

    def context_cache(self, frames, actions):
        return ("context", len(frames))

    def start_rollout(self, candidate_actions, context=None, num_steps=None, seed=None):
        if context is None and not self.ready:
            raise ValueError("no live context yet")
        return StandInJob(self, candidate_actions)

    def finish_rollout(self, job, rows=slice(None), goal=None, return_frames=True):
        cand = job.candidate_actions[rows]
        n, h, _ = cand.shape
        frames = np.zeros((n, h, *self.image_size, 3), np.uint8)
        for c in range(n):
            frames[c] = int(cand[c, -1, 0]) % 256  # a candidate "drives" to its action value
        costs = None
        if goal is not None:
            costs = np.abs(frames[:, -1].astype(float) - goal.astype(float)).mean(axis=(1, 2, 3))
        return SimpleNamespace(frames=frames if return_frames else None, actions=cand, costs=costs)

    def reset(self):
        self.observed.clear()
        self.resets += 1


def stand_in_loader(checkpoint, robot, backend, device="cpu"):
    assert device == "cpu"
    return StandInRunner.from_checkpoint(checkpoint, robot, backend)


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(world_model, "load_runner", stand_in_loader)


def make_node(ctx, **params):
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return world_model.WorldModelNode(context=ctx, parameter_overrides=overrides)


def state_id(node):
    return node._state_machine.current_state[0]


def test_configure_fails_cleanly_and_recovers(ros_context, stand_in, checkpoint, tmp_path, capfd):
    node = make_node(ros_context, checkpoint=str(tmp_path / "missing"))
    assert node.trigger_configure() == FAILURE
    assert "checkpoint folder" in capfd.readouterr().err
    # The node stays up and unconfigured, and /diagnostics says why (as nav2's lifecycle nodes do).
    assert node.state == "unconfigured"
    status = node.diagnostics()
    assert status.level == DiagnosticStatus.ERROR
    assert status.message == f"unconfigured: checkpoint folder {tmp_path / 'missing'} does not exist"
    assert node.set_parameters([Parameter("checkpoint", value=str(checkpoint))])[0].successful
    assert node.trigger_configure() == SUCCESS  # fixed and configured again, same process
    assert node.diagnostics().level == DiagnosticStatus.WARN  # inactive
    assert node.trigger_shutdown() == SUCCESS
    node.destroy_node()

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    node = make_node(ros_context, checkpoint=str(corrupt))
    assert node.trigger_configure() == FAILURE
    assert "cannot load checkpoint" in capfd.readouterr().err
    node.destroy_node()

    for bad in ({"robot": "no_such_robot"}, {"backend": "tpu"}):
        node = make_node(ros_context, checkpoint=str(checkpoint), **bad)
        assert node.trigger_configure() == FAILURE
        node.destroy_node()

    node = make_node(ros_context, checkpoint=str(checkpoint))
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    assert node.trigger_deactivate() == SUCCESS
    assert node.trigger_cleanup() == SUCCESS
    assert node.runner is None
    assert node.trigger_configure() == SUCCESS  # configurable again after cleanup
    assert node.trigger_shutdown() == SUCCESS
    node.destroy_node()


@pytest.mark.parametrize(
    ("device", "reason"),
    [("gpu", "device 'gpu' is not one of cpu, cuda, cuda:N"), ("cuda:0", "needs a CUDA GPU visible to torch")],
)
def test_a_device_this_machine_lacks_fails_configure_with_the_reason(ros_context, stand_in, checkpoint, device, reason):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    node = make_node(ros_context, checkpoint=str(checkpoint), device=device)
    assert node.trigger_configure() == FAILURE
    assert reason in node.config_error
    assert reason in node.diagnostics().message
    assert "(settable while unconfigured" in node.describe_parameter("device").description
    assert node.set_parameters([Parameter("device", value="cpu")])[0].successful
    assert node.trigger_configure() == SUCCESS  # the same process, configured once told the truth
    node.trigger_shutdown()
    node.destroy_node()


def test_real_loader_refuses_an_invalid_checkpoint(ros_context, checkpoint, capfd):
    """The real load_runner on a folder that is no checkpoint (or while hma_ros.runtime.runner
    does not exist yet): configure fails with one clear line, and the node stays usable."""
    node = make_node(ros_context, checkpoint=str(checkpoint))
    assert node.trigger_configure() == FAILURE
    assert "configure failed: cannot load checkpoint" in capfd.readouterr().err
    assert node.trigger_configure() == FAILURE  # still unconfigured, can be retried
    node.destroy_node()


def test_reload_parameters_are_settable_only_while_unconfigured(ros_context, stand_in, checkpoint):
    node = make_node(ros_context, checkpoint=str(checkpoint))
    assert node.set_parameters([Parameter("robot", value="ur5e")])[0].successful  # unconfigured: yes
    assert node.set_parameters([Parameter("robot", value="franka")])[0].successful
    assert node.trigger_configure() == SUCCESS
    result = node.set_parameters([Parameter("backend", value="onnxruntime")])[0]
    assert not result.successful
    assert "clean up the node first" in result.reason
    assert "(settable while unconfigured" in node.describe_parameter("robot").description
    assert node.set_parameters([Parameter("horizon", value=8)])[0].successful
    assert not node.set_parameters([Parameter("horizon", value=0)])[0].successful  # below the range
    assert node.trigger_cleanup() == SUCCESS
    assert node.set_parameters([Parameter("backend", value="onnxruntime")])[0].successful
    node.trigger_shutdown()
    node.destroy_node()


def test_a_horizon_the_machine_cannot_serve_at_2hz_is_refused(ros_context, stand_in, checkpoint):
    node = make_node(ros_context, checkpoint=str(checkpoint))
    assert node.trigger_configure() == SUCCESS
    node.worker.live_frame_seconds = 0.2  # what a slow machine measures per live frame
    assert node.set_parameters([Parameter("horizon", value=1)])[0].successful  # 0.4 s: fits
    result = node.set_parameters([Parameter("horizon", value=8)])[0]
    assert not result.successful
    assert "could not keep 2 Hz" in result.reason
    node.trigger_shutdown()
    node.destroy_node()


class Driver:
    """Publishes camera frames and commands like a robot, records what the world model sends."""

    def __init__(self, ctx, executor):
        self.node = rclpy.create_node("driver", context=ctx)
        self.image_pub = self.node.create_publisher(Image, FRANKA.camera.topic, qos_profile_sensor_data)
        self.cmd_pub = self.node.create_publisher(JointState, FRANKA.action.topic, 10)
        self.got = {"frames": [], "preview": [], "trajectory": [], "diagnostics": []}
        for key, typ, topic in (
            ("frames", PredictedFrames, "/hma/predicted_frames"),
            ("preview", Image, "/hma/preview"),
            ("trajectory", JointTrajectory, "/hma/predicted_trajectory"),
            ("diagnostics", DiagnosticArray, "/diagnostics"),
        ):
            self.node.create_subscription(typ, topic, self.got[key].append, 10)
        self.client = self.node.create_client(Rollout, "/hma/rollout")
        executor.add_node(self.node)

    def publish(self, t, value, encoding="rgb8", positions=None, names=None):
        img = numpy_to_image(np.full((32, 48, 3), value, np.uint8), encoding, sec_to_stamp(t))
        self.image_pub.publish(img)
        self.command(t, positions, names)

    def command(self, t, positions=None, names=None):
        msg = JointState(name=list(names or FRANKA.action.names))
        msg.position = list(positions) if positions is not None else [t % 1.0] * A
        msg.header.stamp = sec_to_stamp(t)
        self.cmd_pub.publish(msg)

    def call(self, request, timeout=10.0):
        assert self.client.wait_for_service(timeout_sec=5.0)
        future = self.client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), "rollout service did not answer"
        return future.result()


@pytest.fixture
def active(ros_context, spinning_executor, stand_in, checkpoint):
    node = make_node(ros_context, checkpoint=str(checkpoint), horizon=3, max_candidates=4, max_rollout_horizon=5)
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    spinning_executor.add_node(node)
    driver = Driver(ros_context, spinning_executor)
    return node, driver


def drive(driver, seconds, t0=1000.0, hz=20.0):
    """Stream 20 Hz commands and 10 Hz frames in real time, stamped on a recorded-like time base."""
    n = int(seconds * hz)
    start = time.monotonic()
    for i in range(n):
        t = t0 + i / hz
        if i % 2 == 0:
            driver.publish(t, i % 200)
        else:
            driver.command(t)
        time.sleep(max(0.0, start + (i + 1) / hz - time.monotonic()))
    return t0 + (n - 1) / hz


def test_predicts_and_publishes(active, wait_for):
    node, driver = active
    drive(driver, 2.0)
    assert wait_for(lambda: len(driver.got["frames"]) >= 1 and len(driver.got["diagnostics"]) >= 1, timeout=3.0)
    msg = driver.got["frames"][-1]
    stamp = stamp_to_sec(msg.header.stamp)
    assert 1000.0 <= stamp < 1002.0  # the camera's time base, not the wall clock
    assert (msg.horizon, msg.step_period, msg.model_id, msg.embodiment) == (3, 0.5, "stand_in", "franka")
    assert len(msg.frames) == 3
    for i, (img, st) in enumerate(zip(msg.frames, msg.stamps, strict=True)):
        assert stamp_to_sec(st) == pytest.approx(stamp + 0.5 * (i + 1), abs=1e-6)
        assert stamp_to_sec(img.header.stamp) == pytest.approx(stamp + 0.5 * (i + 1), abs=1e-6)
        assert image_to_numpy(img).shape == (16, 16, 3)
    assert (msg.action_dim, msg.actions_per_step, msg.action_period) == (A, STRIDE, pytest.approx(0.05))
    assert len(msg.actions) == 3 * STRIDE * A
    assert list(msg.action_names) == list(FRANKA.action.names)
    preview = driver.got["preview"][-1]
    assert (preview.width, preview.height) == (16 * 4, 16)
    traj = driver.got["trajectory"][-1]
    assert len(traj.points) == 3 * STRIDE
    assert list(traj.joint_names) == list(FRANKA.action.names)
    # Step actions reach the runner as stride * action_dim vectors, sampled on the 20 Hz grid.
    actions = [a for _, a, _ in node.runner.observed if a is not None]
    assert actions
    assert all(a.shape == (STRIDE * A,) for a in actions)
    status = driver.got["diagnostics"][-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["predictions"]) >= 1
    assert values["context_ready"] == "True"
    assert 5.0 < float(values["camera_rate_hz"]) < 15.0  # drive() publishes frames at 10 Hz


def test_bad_inputs_are_refused_and_node_keeps_serving(active, wait_for):
    node, driver = active
    driver.publish(999.0, 1, encoding="rgb8")
    bad = numpy_to_image(np.zeros((4, 4, 3), np.uint8))
    bad.encoding = "16UC1"
    driver.image_pub.publish(bad)
    driver.command(999.0, positions=[float("nan")] + [0.0] * (A - 1))
    driver.command(999.0, positions=[0.0] * (A - 1), names=FRANKA.action.names[:-1])
    assert wait_for(lambda: node.counters.frames_refused >= 1 and node.counters.actions_refused >= 2)

    def request(n=2, h=3, values=None, **kw):
        req = Rollout.Request(num_candidates=n, horizon=h, action_dim=A, return_frames=True, seed=-1)
        size = n * h * STRIDE * A
        req.candidate_actions = list(values) if values is not None else [0.0] * size
        for k, v in kw.items():
            setattr(req, k, v)
        return req

    refusals = {
        "empty": (Rollout.Request(), "num_candidates=0"),
        "too many": (request(n=5), "num_candidates=5 must be in \\[1, 4\\]"),
        "too long": (request(h=6), "horizon=6 must be in \\[1, 5\\]"),
        "wrong length": (request(values=[0.0] * 7), "candidate_actions has 7 values"),
        "wrong dim": (request(action_dim=7), "action_dim=7"),
        "wrong stride": (request(actions_per_step=3), "actions_per_step=3"),
        "nan": (request(values=[float("nan")] * (2 * 3 * STRIDE * A)), "NaN"),
        "absurd": (request(values=[1e10] * (2 * 3 * STRIDE * A)), "is outside .* action_range_factor"),
        "bad context": (request(context_frames=[bad], context_actions=[0.0] * STRIDE * A), "context_frames\\[0\\]"),
        "context actions": (
            request(context_frames=[numpy_to_image(np.zeros((8, 8, 3), np.uint8))], context_actions=[1.0]),
            "context_actions has 1 values",
        ),
        "no live context": (request(), "not enough live context"),
    }
    for name, (req, why) in refusals.items():
        resp = driver.call(req)
        assert not resp.success, name
        assert len(resp.frames) == 0
        assert re.search(why, resp.message), (name, resp.message)
    assert node.counters.rollouts_refused == len(refusals)

    # Still serving: a valid request with its own context and a goal.
    values = np.zeros((2, 3, STRIDE, A), np.float32)
    values[0], values[1] = 80.0, 7.0
    ctx = [numpy_to_image(np.full((24, 24, 3), 50, np.uint8), "bgr8", sec_to_stamp(5.0)) for _ in range(2)]
    goal = numpy_to_image(np.full((16, 16, 3), 7, np.uint8))
    resp = driver.call(
        request(values=values.reshape(-1), context_frames=ctx, context_actions=[0.0] * 2 * STRIDE * A, goal=goal)
    )
    assert resp.success, resp.message
    assert (resp.num_candidates, resp.horizon, resp.action_dim, resp.actions_per_step) == (2, 3, A, STRIDE)
    assert len(resp.frames) == 6  # candidate-major
    assert int(image_to_numpy(resp.frames[0])[0, 0, 0]) == 80
    assert int(image_to_numpy(resp.frames[3])[0, 0, 0]) == 7
    assert stamp_to_sec(resp.frames[4].header.stamp) == pytest.approx(5.0 + 1.0)
    assert np.argmin(resp.costs) == 1
    assert len(resp.costs) == 2
    assert len(resp.predicted_actions) == values.size
    assert resp.total_time >= resp.inference_time > 0

    # And the live pipeline still predicts after all that.
    drive(driver, 1.6)
    assert wait_for(lambda: len(driver.got["frames"]) >= 1, timeout=3.0)
    resp = driver.call(request(return_frames=False))
    assert resp.success
    assert len(resp.frames) == 0
    assert len(resp.costs) == 0


def test_time_jump_back_starts_a_new_context(active, wait_for):
    """A looped recording: stamps jump back, the node resets the runner instead of mixing timelines."""
    node, driver = active
    drive(driver, 1.6)
    assert wait_for(lambda: len(driver.got["frames"]) >= 1, timeout=3.0)
    first = len(driver.got["frames"])
    drive(driver, 1.6)  # same stamps again
    assert wait_for(lambda: len(driver.got["frames"]) > first, timeout=3.0)
    assert node.cutter.stats.time_resets == 1
    assert node.runner.resets == 3  # activate, the first context, and the one after the jump
    assert node.counters.actions_refused == 0  # no "older than the last one" refusals
    assert node.runner.observed[0][1] is None  # the new context starts without a step action


def test_out_of_range_commands_are_refused_and_shown(active, wait_for):
    """1e30 joint commands (a broken driver) never reach the model: refused, counted, on /diagnostics;
    predictions go on from the valid ones."""
    node, driver = active
    drive(driver, 1.6)
    assert wait_for(lambda: len(driver.got["frames"]) >= 1, timeout=3.0)
    for i in range(5):
        driver.command(1001.6 + 0.05 * i, positions=[1e30] * A)
    assert wait_for(lambda: node.counters.actions_out_of_range == 5)
    status = node.diagnostics()
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "actions out of range refused"
    before = len(driver.got["frames"])
    drive(driver, 1.6, t0=1002.0)
    assert wait_for(lambda: len(driver.got["frames"]) > before, timeout=3.0)
    assert all(np.isfinite(m.actions).all() and max(abs(x) for x in m.actions) < 1e3 for m in driver.got["frames"])


def test_concurrent_rollouts_are_batched_and_all_answered(active, wait_for):
    node, driver = active
    drive(driver, 1.6)
    assert wait_for(lambda: node.runner.ready, timeout=3.0)
    assert driver.client.wait_for_service(timeout_sec=5.0)
    release = threading.Event()
    node.worker.call(release.wait)  # hold the model so that the requests queue up together
    futures = []
    for c in range(4):
        req = Rollout.Request(num_candidates=2, horizon=3, action_dim=A, return_frames=True, seed=-1)
        req.candidate_actions = [float(c)] * (2 * 3 * STRIDE * A)
        futures.append(driver.client.call_async(req))
    assert wait_for(lambda: node.worker.snapshot()["rollouts_queued"] == 4 or any(f.done() for f in futures)), [
        f.result().message for f in futures if f.done()
    ]
    release.set()
    assert wait_for(lambda: all(f.done() for f in futures), timeout=10.0)
    for c, f in enumerate(futures):
        resp = f.result()
        assert resp.success, resp.message
        assert int(image_to_numpy(resp.frames[0])[0, 0, 0]) == c  # each request got its own candidates back
    assert node.worker.stats.rollout_jobs == 1
    assert node.worker.stats.rollout_jobs_shared == 1


BUNDLED = Path(__file__).resolve().parents[1] / "data" / "franka_demo.mcap"


@pytest.mark.skipif(not BUNDLED.is_file(), reason="the bundled recording is not there")
def test_bundled_recording_drives_the_world_model(ros_context, spinning_executor, stand_in, checkpoint, wait_for):
    """The shipped franka recording, replayed 2x fast, fills the node's inputs and yields predictions.

    (At 4x, 200 messages/s, rclpy's Python executor on a 2-core machine falls behind and the
    reliable command queue overflows: the node still cuts correct steps, but loses commands.)
    """
    from hma_ros.data.rosbag import topics as bag_topics
    from hma_ros.nodes.bag_replay import BagReplay

    counts = {topic: n for topic, (_, n) in bag_topics(BUNDLED).items()}
    node = make_node(ros_context, checkpoint=str(checkpoint))
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    spinning_executor.add_node(node)
    time.sleep(0.3)  # discovery
    replay = BagReplay(
        context=ros_context,
        parameter_overrides=[Parameter("bag", value=str(BUNDLED)), Parameter("rate", value=2.0)],
    )
    spinning_executor.add_node(replay)
    assert replay.finished.wait(30.0)
    stats = node.cutter.assembler.stats
    assert wait_for(lambda: stats.actions_in >= 0.95 * counts[FRANKA.action.topic], timeout=3.0), stats
    # Best-effort camera QoS (depth 5): a loaded machine loses frames, by design (the newest wins).
    assert stats.frames_in >= 0.5 * counts[FRANKA.camera.topic], stats
    assert node.counters.actions_refused == 0
    assert node.counters.frames_refused == 0
    assert node.worker.stats.predictions >= 1
    # Steps are cut every 0.5 s of the recording's time, whatever the replay rate.
    stamps = np.array([stamp for _, _, stamp in node.runner.observed])
    assert len(stamps) >= 3
    assert np.median(np.diff(stamps)) == pytest.approx(0.5, abs=1e-3)
    assert (np.diff(stamps) > 0.45).all()


def test_real_runner_predicts_and_serves_rollouts(ros_context, spinning_executor, tiny_franka_checkpoint, wait_for):
    """The node on the real WorldModelRunner: live predictions and a rollout with a goal."""
    node = make_node(ros_context, checkpoint=str(tiny_franka_checkpoint), horizon=2)
    assert node.trigger_configure() == SUCCESS
    assert node.trigger_activate() == SUCCESS
    spinning_executor.add_node(node)
    driver = Driver(ros_context, spinning_executor)
    drive(driver, 2.0)
    assert wait_for(lambda: len(driver.got["frames"]) >= 1, timeout=10.0), node.diagnostics()
    msg = driver.got["frames"][-1]
    assert (msg.model_id, msg.horizon, len(msg.frames)) == ("hma_tiny_franka", 2, 2)
    assert (msg.frames[0].height, msg.frames[0].width) == (16, 16)
    assert len(msg.actions) == 2 * STRIDE * A

    req = Rollout.Request(num_candidates=3, horizon=2, action_dim=A, seed=1, return_frames=True)
    req.candidate_actions = np.random.default_rng(0).normal(size=3 * 2 * STRIDE * A).astype(np.float32).tolist()
    req.goal = numpy_to_image(np.full((40, 40, 3), 128, np.uint8))
    resp = driver.call(req, timeout=30.0)
    assert resp.success, resp.message
    assert len(resp.frames) == 6
    assert len(resp.costs) == 3
    assert len(resp.predicted_actions) == 3 * 2 * STRIDE * A
    assert node.worker.stats.prediction_errors == 0
