"""Shared fixtures for the ROS tests: an isolated ROS graph per run, a fresh rclpy Context
per test and an executor spun in a background thread."""

import os
import random
import time

import pytest

# Keep DDS discovery on this machine and away from other test runs (../shared/ROS_FROM_PYPI.md).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(5, 95)))


def _wait_for(predicate, timeout: float = 5.0, period: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return bool(predicate())


@pytest.fixture
def wait_for():
    """``wait_for(predicate, timeout=5.0)``: poll until true; returns the predicate's last value."""
    return _wait_for


@pytest.fixture
def write_mcap():
    """``write_mcap(path, [(topic, msg, t_seconds), ...])``: a rosbag2-style MCAP (CDR, log time = t)."""
    pytest.importorskip("mcap")
    from mcap.writer import Writer
    from rclpy.serialization import serialize_message

    def write(path, messages):
        with open(path, "wb") as f:
            w = Writer(f)
            w.start(profile="ros2", library="hma_ros tests")
            channels = {}
            for topic, msg, t in messages:
                if topic not in channels:
                    module = type(msg).__module__.split(".")[0]
                    schema = w.register_schema(f"{module}/msg/{type(msg).__name__}", "ros2msg", b"")
                    channels[topic] = w.register_channel(topic, "cdr", schema)
                ns = int(round(t * 1e9))
                w.add_message(channels[topic], log_time=ns, data=serialize_message(msg), publish_time=ns)
            w.finish()
        return path

    return write


@pytest.fixture
def ros_context():
    """A fresh, initialised rclpy Context, shut down after the test."""
    rclpy = pytest.importorskip("rclpy")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)


@pytest.fixture
def spinning_executor(ros_context):
    """The executor every hma_ros process uses (nodes/spin.py: single-threaded, in a thread) on
    ``ros_context``; add nodes to it. Nodes are destroyed after the test."""
    from hma_ros.nodes.spin import ExecutorThread

    spinner = ExecutorThread(context=ros_context).start()
    yield spinner.executor
    nodes = list(spinner.executor.get_nodes())
    for node in nodes:  # a lifecycle node's worker publishes: stop it while the context is valid
        if hasattr(node, "stop"):
            node.stop()
    assert spinner.stop(timeout=5.0)
    for node in nodes:
        node.destroy_node()


@pytest.fixture
def tiny_franka_checkpoint(tmp_path):
    """A real checkpoint for config/robots/franka.yaml with random weights (hma_tiny, continuous,
    16x16 pixel tokens): what the nodes load when no trained model is at hand."""
    torch = pytest.importorskip("torch")
    from hma_ros.model.checkpoint import save_checkpoint
    from hma_ros.model.config import EmbodimentSpec
    from hma_ros.model.hma import HMA
    from hma_ros.model.presets import make_config
    from hma_ros.runtime.robot_config import load_robot_config
    from hma_ros.tokenizers import PixelConfig, PixelTokenizer

    franka = load_robot_config("franka")

    torch.manual_seed(0)
    spec = EmbodimentSpec(
        "franka", action_dim=franka.action_dim, control_hz=franka.control_hz, action_names=franka.action.names
    )
    cfg = make_config("hma_tiny", [spec], variant="continuous", token_dim=48, diff_sample_steps=4)
    folder = save_checkpoint(tmp_path / "hma_tiny_franka", HMA(cfg).eval())
    PixelTokenizer(PixelConfig(image_size=(16, 16), patch=4)).save(folder / "tokenizer")
    return folder
