"""The nodes as separate processes over real DDS (loopback, this run's ROS_DOMAIN_ID): the demo
pipeline bag_replay -> world_model -> a listener, and a clean failure on a missing checkpoint.

world_model runs the real WorldModelRunner on a tiny random checkpoint (conftest.py).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hma_ros_interfaces.msg")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hma_ros.nodes.convert import numpy_to_image, sec_to_stamp, stamp_to_sec  # noqa: E402
from hma_ros.runtime.robot_config import load_robot_config  # noqa: E402
from hma_ros_interfaces.msg import PredictedFrames  # noqa: E402

pytestmark = pytest.mark.ros
FRANKA = load_robot_config("franka")
T0, SECONDS = 1_700_000_000.0, 5.0


def franka_recording():
    out = []
    for i in range(int(SECONDS * FRANKA.control_hz)):
        t = T0 + i / FRANKA.control_hz
        cmd = JointState(name=list(FRANKA.action.names), position=[0.1 * i] * FRANKA.action_dim)
        cmd.header.stamp = sec_to_stamp(t)
        out.append((FRANKA.action.topic, cmd, t))
        if i % 2 == 0:  # 10 Hz camera
            img = numpy_to_image(np.full((128, 128, 3), i % 256, np.uint8), "rgb8", sec_to_stamp(t), "camera")
            out.append((FRANKA.camera.topic, img, t))
    return out


def ros_args(**params):
    return ["--ros-args"] + [x for k, v in params.items() for x in ("-p", f"{k}:={v}")]


def start(args):
    # New session: SIGINT reaches the child even though this shell job ignores it.
    # PYTHONSAFEPATH: the cwd (the repository root) must not shadow the hma_ros package (conftest.py).
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env
    )


def stop(proc, timeout=10.0):
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{proc.args[:3]} did not stop on SIGINT:\n{out}")
    return proc.returncode, out


def test_demo_pipeline_over_dds(ros_context, spinning_executor, wait_for, write_mcap, tmp_path, tiny_franka_checkpoint):
    bag = write_mcap(tmp_path / "franka.mcap", franka_recording())
    ckpt = tiny_franka_checkpoint

    listener = rclpy.create_node("listener", context=ros_context)
    got = {"frames": [], "diag": []}
    listener.create_subscription(
        PredictedFrames, "/hma/predicted_frames", lambda m: got["frames"].append((time.time(), m)), 10
    )
    listener.create_subscription(DiagnosticArray, "/diagnostics", lambda m: got["diag"].append((time.time(), m)), 10)
    spinning_executor.add_node(listener)

    wm = start(
        [
            sys.executable,
            "-m",
            "hma_ros.nodes.world_model",
            *ros_args(robot="franka", checkpoint=ckpt, autostart="true", horizon=2),
        ]
    )
    procs = [wm]
    try:
        # Start the replay once the world model is up (its first diagnostics arrive).
        assert wait_for(lambda: got["diag"], timeout=15.0), stop(wm)[1]
        replay = start([sys.executable, "-m", "hma_ros.nodes.bag_replay", *ros_args(bag=bag, rate=1.0)])
        procs.append(replay)
        assert wait_for(lambda: len(got["frames"]) >= 2, timeout=SECONDS + 10.0), (stop(wm)[1], stop(replay)[1])
        ok = DiagnosticStatus.OK
        assert wait_for(lambda: any(m.status[0].level == ok for _, m in got["diag"]), timeout=SECONDS)
        with contextlib.suppress(subprocess.TimeoutExpired):
            replay.wait(timeout=SECONDS + 10.0)  # it exits by itself at the end of the recording
        code, out = stop(replay)
        assert code == 0, out
        assert "played" in out
    finally:
        results = [stop(p) for p in procs if p.returncode is None]
    assert all(code == 0 for code, _ in results), results

    _, msg = got["frames"][-1]
    stamp = stamp_to_sec(msg.header.stamp)
    assert T0 <= stamp <= T0 + SECONDS  # the recording's time base went through untouched
    assert msg.horizon == 2
    assert len(msg.frames) == 2
    assert (msg.frames[0].height, msg.frames[0].width) == (16, 16)
    assert len(msg.actions) == 2 * FRANKA.stride * FRANKA.action_dim
    # /diagnostics is stamped with the sender's wall clock: receive - stamp is the DDS latency.
    latencies = [t - stamp_to_sec(m.header.stamp) for t, m in got["diag"]]
    print(f"DDS latency of /diagnostics: median {np.median(latencies) * 1e3:.2f} ms, max {max(latencies) * 1e3:.2f} ms")
    assert np.median(latencies) < 0.1
    last = {kv.key: kv.value for kv in got["diag"][-1][1].status[0].values}
    print(f"world_model tick latency (tiny model): mean {last['latency_mean_ms']} ms, max {last['latency_max_ms']} ms")


def test_a_failed_configure_leaves_the_node_up_and_says_why(ros_context, spinning_executor, tmp_path):
    """As nav2's lifecycle nodes: a missing checkpoint is a failed configure, not a dead process.
    The reason is in the log and on /diagnostics; SIGINT then ends the process with 0."""
    from hma_ros.nodes.client import WorldModelClient
    from hma_ros.nodes.processes import NodeProcess

    client = WorldModelClient("watcher", context=ros_context)
    spinning_executor.add_node(client.node)
    missing = tmp_path / "nope"
    proc = NodeProcess("world_model", {"robot": "franka", "checkpoint": missing, "autostart": True}, tmp_path / "log")
    try:
        assert client.wait_for_diagnostics(lambda d: "config_error" in d, timeout=30.0), proc.log_tail()
        values, message, _ = client.diagnostics()
        assert message == f"unconfigured: checkpoint folder {missing} does not exist"
        assert values["config_error"] == f"checkpoint folder {missing} does not exist"
        assert proc.alive()
    finally:
        code, seconds = proc.stop()
    log = proc.log_tail()
    assert code == 0, log
    assert seconds < 2.0
    assert f"configure failed: checkpoint folder {missing} does not exist" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_end_a_fed_node_cleanly_and_fast(sig, write_mcap, tmp_path, tiny_franka_checkpoint):
    """SIGINT/SIGTERM while the node is fed and predicting: exit 0 within 2 s, nothing printed
    about a failed publish, a bad transition or an abort. Three times each: one lucky run proves nothing."""
    from hma_ros.nodes.processes import NodeProcess

    bag = write_mcap(tmp_path / "franka.mcap", franka_recording())
    replay = NodeProcess("bag_replay", {"bag": bag, "loop": True}, tmp_path / "replay.log")
    try:
        for run in range(3):
            log = tmp_path / f"wm{run}.log"
            params = {"checkpoint": tiny_franka_checkpoint, "autostart": True, "horizon": 2}
            wm = NodeProcess("world_model", params, log)
            assert _wait_for_line(log, "active: camera", timeout=30.0), wm.log_tail()
            time.sleep(1.5)  # fed and predicting (the replay loops)
            code, seconds = wm.stop(sig, timeout=10.0)
            out = wm.log_tail(100_000)
            assert code == 0, out
            assert seconds < 2.0, (seconds, out)
            for bad in BAD_EXIT_LINES:
                assert bad not in out, out
    finally:
        code, _ = replay.stop(sig)
    assert code == 0, replay.log_tail()


BAD_EXIT_LINES = ("terminate called", "Failed to publish", "Unable to start transition", "Traceback", "Destroyable")


def _wait_for_line(log, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and text in log.read_text():
            return True
        time.sleep(0.1)
    return False


def test_demo_entry_point(write_mcap, tmp_path, tiny_franka_checkpoint):
    """`make demo`'s module end to end, in-process, on a tiny real checkpoint."""
    from hma_ros.nodes import demo

    bag = write_mcap(tmp_path / "franka.mcap", franka_recording())
    ckpt = tiny_franka_checkpoint
    out = tmp_path / "demo.json"
    code = demo.main(["--bag", str(bag), "--checkpoint", str(ckpt), "--seconds", "6", "--out", str(out)])
    summary = json.loads(out.read_text())
    assert code == 0, summary
    assert summary["predictions"] >= 2
    assert summary["rollout"]["success"]
    assert summary["rollout"]["frames"] == 4 * 4


def test_demo_fails_cleanly_without_a_model(tmp_path):
    from hma_ros.nodes import demo

    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--checkpoint", str(tmp_path / "none"), "--seconds", "0"])
    assert exit_info.value.code == 1
