"""The package driven the way a ROS user drives it, in subprocesses: `ros2 launch`, `ros2 run`,
`ros2 topic hz/echo`, `ros2 service call`, `ros2 lifecycle`, `ros2 param`, and a colcon workspace
build of both packages launched from its install/.

launch, launch_ros and ros2cli come from ../shared/ros_tools (no registry here carries them;
`make test` installs them when that folder is there): without them these tests skip.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("launch_ros", reason="launch_ros is not installed (../shared/ros_tools: make ros-tools)")
pytest.importorskip("ros2cli", reason="ros2cli is not installed (../shared/ros_tools: make ros-tools)")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROS2 = str(BIN / "ros2")


def env(**extra):
    # PYTHONSAFEPATH: the repository root (the cwd) holds the ament folder hma_ros/.
    return {**os.environ, "PYTHONSAFEPATH": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}


def start(args, **kw):
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env(), **kw
    )


def ros2(*args, timeout=60.0, environ=None, check=True):
    """Run a ros2 command to its end; its output (stdout + stderr)."""
    proc = subprocess.run([ROS2, *args], capture_output=True, text=True, timeout=timeout, env=environ or env())
    assert not check or proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout + proc.stderr


def ros2_until(*args, pattern, count, timeout=60.0):
    """Run a ros2 command that never ends by itself (``ros2 topic hz``) until ``pattern`` matched
    ``count`` lines, then SIGINT it; the matches."""
    proc = start([ROS2, *args])
    found, deadline = [], time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            if m := re.search(pattern, line):
                found.append(m.group(1))
    finally:
        stop(proc)
    return found


@pytest.fixture(scope="module", autouse=True)
def _no_daemon_left_behind():
    """`ros2 topic/service/param/lifecycle` start a ros2 daemon for the run's domain that
    outlives the tests (one per run, ~90 MB each on a developer's machine): stop it."""
    yield
    ros2("daemon", "stop", check=False, timeout=30.0)


def stop(proc, sig=signal.SIGINT, timeout=15.0, group=False):
    """Signal ``proc`` (its whole process group, as Ctrl-C in a terminal does, with ``group``);
    (exit code, output). Kills the group if it does not end: an orphan holding the pipe would
    otherwise block the read forever."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for child in descendants(proc):
            child.kill()
        out, _ = proc.communicate(timeout=10.0)
        pytest.fail(f"{proc.args[:3]} did not stop on {sig!r}:\n{out}")
    return proc.returncode, out


def wait_for_state(state, timeout=120.0, node="/world_model", environ=None):
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(
            [ROS2, "lifecycle", "get", node], capture_output=True, text=True, timeout=30, env=environ or env()
        )
        out = proc.stdout
        if out.startswith(state):
            return out
        time.sleep(1.0)
    pytest.fail(f"{node} never reached {state}: {out}")


def descendants(proc):
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


ROLLOUT = (
    "{num_candidates: 2, horizon: 2, action_dim: 8, return_frames: false, seed: 1, candidate_actions: ["
    + ", ".join(["0.0, 0.6, 0.0, -2.2, 0.0, 2.9, 0.8, -0.1"] * 40)
    + "]}"
)


def test_launch_replay_topics_service_lifecycle_and_params():
    launch = start([ROS2, "launch", "hma_ros", "world_model.launch.py", "robot:=franka"])
    replay = None
    try:
        assert wait_for_state("active").startswith("active [3]")
        replay = start([ROS2, "run", "hma_ros", "bag_replay", "--ros-args", "-p", "loop:=true"])
        echo = ros2("topic", "echo", "--once", "--field", "horizon", "/hma/predicted_frames", timeout=60.0)
        assert echo.split()[0] == "4"
        rates = ros2_until("topic", "hz", "/hma/predicted_frames", pattern=r"average rate: ([0-9.]+)", count=4)
        assert len(rates) == 4
        assert 1.5 < float(rates[-1]) < 2.5, rates
        answer = ros2("service", "call", "/hma/rollout", "hma_ros_interfaces/srv/Rollout", ROLLOUT, timeout=60.0)
        assert "success=True" in answer, answer
        assert "num_candidates=2" in answer
        assert "Integer value is: 4" in ros2("param", "get", "/world_model", "horizon")
        refused = ros2("param", "set", "/world_model", "robot", "ur5e", check=False)
        assert "clean up the node first" in refused
        assert "Transitioning successful" in ros2("lifecycle", "set", "/world_model", "deactivate")
        assert wait_for_state("inactive").startswith("inactive [2]")
        answer = ros2("service", "call", "/hma/rollout", "hma_ros_interfaces/srv/Rollout", ROLLOUT, timeout=60.0)
        assert "success=False" in answer
        assert "inactive, not active" in answer
        assert "Transitioning successful" in ros2("lifecycle", "set", "/world_model", "activate")
    finally:
        if replay is not None:  # ros2 run forwards nothing: Ctrl-C reaches its whole process group
            code, out = stop(replay, group=True)
            assert code == 0, out
        children = descendants(launch)
        # SIGTERM to the launcher alone: launch 3.7 exits without stopping its children, and the
        # node must notice (it watches its parent) instead of living on as an orphan.
        code, out = stop(launch, signal.SIGTERM)
    assert children, "ros2 launch started no process"
    _, alive = psutil.wait_procs(children, timeout=5.0)
    assert not alive, [p.cmdline() for p in alive]
    assert "terminate called" not in out


def test_demo_launch_predicts_and_stops_cleanly():
    launch = start([ROS2, "launch", "hma_ros", "demo.launch.py"])
    try:
        assert wait_for_state("active").startswith("active")
        echo = ros2("topic", "echo", "--once", "--field", "embodiment", "/hma/predicted_frames", timeout=60.0)
        assert echo.split()[0] == "franka"
    finally:
        code, out = stop(launch)
    assert code == 0, out
    assert "terminate called" not in out


@pytest.mark.slow
def test_colcon_workspace_builds_both_packages_and_launches_from_install(tmp_path):
    colcon = BIN / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed (requirements/dev.txt)")
    src = tmp_path / "ws" / "src"
    for pkg in ("hma_ros", "hma_ros_interfaces"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    build = subprocess.run(
        [str(colcon), "build", "--base-paths", "src", "--event-handlers", "console_cohesion-"],
        cwd=tmp_path / "ws",
        capture_output=True,
        text=True,
        timeout=1200,
        env=env(),
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    install = tmp_path / "ws" / "install"
    # What `source install/setup.sh` does, read back as an environment.
    sourced = subprocess.run(
        ["sh", "-c", f". {install}/setup.sh && env -0"], capture_output=True, timeout=60, env=env()
    ).stdout.decode()
    overlay = dict(line.split("=", 1) for line in sourced.split("\0") if "=" in line)
    assert ros2("pkg", "prefix", "hma_ros", environ=overlay).strip() == str(install / "hma_ros")
    assert ros2("pkg", "prefix", "hma_ros_interfaces", environ=overlay).strip() == str(install / "hma_ros_interfaces")
    launch = subprocess.Popen(
        [ROS2, "launch", "hma_ros", "world_model.launch.py", "robot:=franka"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=overlay,
        cwd=tmp_path,
    )
    try:
        assert wait_for_state("active", environ=overlay).startswith("active")
        answer = ros2("param", "get", "/world_model", "checkpoint", environ=overlay)
        assert "String value is:" in answer
    finally:
        code, out = stop(launch)
    assert code == 0, out
    assert str(install / "hma_ros") in out or "configured: robot franka" in out, out
