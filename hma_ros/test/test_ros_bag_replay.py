"""bag_replay publishes a recording's messages, in order, with the recorded timing."""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mcap")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from hma_ros.data.rosbag import topics as bag_topics  # noqa: E402
from hma_ros.nodes.bag_replay import BagReplay, message_class  # noqa: E402
from hma_ros.nodes.convert import image_to_numpy, numpy_to_image, sec_to_stamp  # noqa: E402

T0 = 1_700_000_000.0
PERIOD = 0.05  # 20 Hz commands, camera every other one (10 Hz)
N = 20


def recording_messages():
    """Camera images at 10 Hz and JointState commands at 20 Hz, stamped like a recording."""
    out = []
    for i in range(N):
        t = T0 + i * PERIOD
        cmd = JointState(name=["j1", "j2"], position=[float(i), -float(i)])
        cmd.header.stamp = sec_to_stamp(t)
        out.append(("/joint_command", cmd, t))
        if i % 2 == 0:
            out.append(("/camera/image_raw", numpy_to_image(np.full((4, 6, 3), i, np.uint8), stamp=sec_to_stamp(t)), t))
    return out


@pytest.fixture
def recording(tmp_path, write_mcap):
    return write_mcap(tmp_path / "rec.mcap", recording_messages())


def test_bag_topics_and_types(recording):
    assert bag_topics(recording) == {
        "/camera/image_raw": ("sensor_msgs/msg/Image", N // 2),
        "/joint_command": ("sensor_msgs/msg/JointState", N),
    }
    assert message_class("sensor_msgs/msg/Image") is Image
    with pytest.raises(ValueError, match="not installed"):
        message_class("no_such_msgs/msg/Thing")


def _listen(node, received):
    node.create_subscription(JointState, "/joint_command", lambda m: received.append(("cmd", time.monotonic(), m)), 100)
    node.create_subscription(
        Image, "/camera/image_raw", lambda m: received.append(("img", time.monotonic(), m)), qos_profile_sensor_data
    )


@pytest.mark.ros
def test_replay_publishes_everything_with_timing(ros_context, spinning_executor, wait_for, recording):
    listener = rclpy.create_node("listener", context=ros_context)
    received = []
    _listen(listener, received)
    spinning_executor.add_node(listener)
    time.sleep(0.2)  # let the subscriptions match before playback starts
    rate = 2.0
    replay = BagReplay(
        context=ros_context,
        parameter_overrides=[Parameter("bag", value=str(recording)), Parameter("rate", value=rate)],
    )
    spinning_executor.add_node(replay)
    assert replay.finished.wait(10.0)
    assert wait_for(lambda: len(received) >= N + N // 2, timeout=5.0), len(received)

    cmds = [(t, m) for kind, t, m in received if kind == "cmd"]
    assert [list(m.position) for _, m in cmds] == [[float(i), -float(i)] for i in range(N)]
    imgs = [m for kind, _, m in received if kind == "img"]
    assert [int(image_to_numpy(m)[0, 0, 0]) for m in imgs] == list(range(0, N, 2))
    # Recorded stamps are kept; arrival spacing follows the log times divided by the rate.
    assert abs(cmds[3][1].header.stamp.sec + cmds[3][1].header.stamp.nanosec * 1e-9 - (T0 + 3 * PERIOD)) < 1e-6
    span = cmds[-1][0] - cmds[0][0]
    expected = (N - 1) * PERIOD / rate
    assert expected * 0.8 < span < expected + 0.25, (span, expected)


@pytest.mark.ros
def test_replay_start_offset_topics_and_loop(ros_context, spinning_executor, wait_for, recording):
    listener = rclpy.create_node("listener", context=ros_context)
    received = []
    _listen(listener, received)
    spinning_executor.add_node(listener)
    time.sleep(0.2)
    replay = BagReplay(
        context=ros_context,
        parameter_overrides=[
            Parameter("bag", value=str(recording)),
            Parameter("rate", value=10.0),
            Parameter("start_offset", value=0.5),  # skips the first 10 commands
            Parameter("topics", value=["/joint_command"]),
            Parameter("loop", value=True),
        ],
    )
    spinning_executor.add_node(replay)
    assert wait_for(lambda: len(received) >= 2 * (N - 10) + 1, timeout=5.0)
    replay.stop()
    assert all(kind == "cmd" for kind, _, _ in received)
    firsts = [m.position[0] for _, _, m in received[: 2 * (N - 10)]]
    assert firsts == [float(i) for i in range(10, N)] * 2


def test_missing_bag_and_topic_are_clear_errors(ros_context, recording):
    with pytest.raises(ValueError, match="not found"):
        BagReplay(context=ros_context, parameter_overrides=[Parameter("bag", value="/nope/x.mcap")])
    with pytest.raises(ValueError, match=r"topics \['/tf'\] are not in"):
        BagReplay(
            context=ros_context,
            parameter_overrides=[Parameter("bag", value=str(recording)), Parameter("topics", value=["/tf"])],
        )
