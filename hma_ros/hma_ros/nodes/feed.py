"""Drive a world model like a robot does, for the benchmarks, the soak test and the fuzzer.

:class:`Recording` holds a recording's camera images and commands with their offsets;
:class:`Feeder` publishes them on the robot's topics at any rates (zero-order hold on the
recorded timeline, looped, restamped with the wall clock), plus /joint_states;
:class:`RolloutLoad` is N clients each calling /hma/rollout as fast as answers come;
:class:`Session` runs a node process against them; :func:`ros_tool` is a tool's ROS set-up.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState

from hma_ros.data.rosbag import iter_raw
from hma_ros.nodes import spin
from hma_ros.nodes.bag_replay import message_class, resolve_bag
from hma_ros.nodes.client import WorldModelClient
from hma_ros.nodes.convert import joint_positions, sec_to_stamp
from hma_ros.nodes.processes import NodeProcess
from hma_ros.runtime.robot_config import RobotConfig
from hma_ros_interfaces.srv import Rollout


@dataclass
class Recording:
    """A recording's camera images and commands for one robot: ``(offset s, message)`` each."""

    robot: RobotConfig
    camera: list[tuple[float, Any]]
    commands: list[tuple[float, Any]]

    @classmethod
    def load(cls, bag: str, robot: RobotConfig) -> Recording:
        path = resolve_bag(bag)
        streams: dict[str, list[tuple[float, Any]]] = {robot.camera.topic: [], robot.action.topic: []}
        first = None
        for raw in iter_raw(path, list(streams)):
            first = raw.log_time_ns if first is None else first
            msg = deserialize_message(raw.cdr, message_class(raw.msgtype))
            streams[raw.topic].append(((raw.log_time_ns - first) * 1e-9, msg))
        for topic, msgs in streams.items():
            if len(msgs) < 2:
                raise ValueError(f"{path} has {len(msgs)} messages on {topic}; need at least 2")
        return cls(robot, streams[robot.camera.topic], streams[robot.action.topic])

    @property
    def duration(self) -> float:
        return max(self.camera[-1][0], self.commands[-1][0]) + 0.1

    def mean_command(self) -> np.ndarray:
        return np.mean([joint_positions(m, self.robot.action.names) for _, m in self.commands], axis=0).astype(
            np.float32
        )

    @staticmethod
    def at(stream: list[tuple[float, Any]], offset: float) -> Any:
        """The message in force at ``offset`` (zero-order hold)."""
        i = bisect.bisect_right([t for t, _ in stream], offset) - 1
        return stream[max(i, 0)][1]


class Feeder:
    """Publishes a :class:`Recording` on the robot's topics from one thread: the camera at
    ``camera_hz``, commands at ``command_hz`` (each the recorded message in force at that point
    of the looped recording, stamped with the wall clock) and /joint_states at ``joint_hz``."""

    def __init__(
        self,
        node: Any,
        recording: Recording,
        camera_hz: float = 10.0,
        command_hz: float | None = None,
        joint_hz: float = 100.0,
    ) -> None:
        robot = recording.robot
        self.recording = recording
        self.rates = {"camera": camera_hz, "command": command_hz or robot.control_hz, "joints": joint_hz}
        self.pubs = {
            "camera": node.create_publisher(type(recording.camera[0][1]), robot.camera.topic, 10),
            "command": node.create_publisher(type(recording.commands[0][1]), robot.action.topic, 50),
        }
        if joint_hz > 0:
            self.pubs["joints"] = node.create_publisher(JointState, "/joint_states", 50)
        self.sent = dict.fromkeys(self.pubs, 0)
        self._joints = JointState(name=list(robot.action.names), position=[0.0] * robot.action_dim)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribers(self) -> int:
        """Fewest subscribers on the robot's two topics (discovery done when >= 1)."""
        return min(self.pubs[k].get_subscription_count() for k in ("camera", "command"))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _message(self, kind: str, offset: float) -> Any:
        if kind == "joints":
            return self._joints
        stream = self.recording.camera if kind == "camera" else self.recording.commands
        return Recording.at(stream, offset)

    def _run(self) -> None:
        t0, duration = time.monotonic(), self.recording.duration
        due = {kind: t0 for kind in self.pubs}
        while not self._stop.is_set():
            kind = min(due, key=due.get)
            if self._stop.wait(max(0.0, due[kind] - time.monotonic())):
                return
            msg = self._message(kind, (due[kind] - t0) % duration)
            msg.header.stamp = sec_to_stamp(time.time())
            self.pubs[kind].publish(msg)
            self.sent[kind] += 1
            due[kind] += 1.0 / self.rates[kind]


@dataclass
class RolloutLoad:
    """``clients`` threads, each calling /hma/rollout with ``make_request(rng)`` as soon as the
    previous answer came; ``answers`` collects (round trip s, success, message)."""

    client: WorldModelClient
    clients: int
    make_request: Callable[[np.random.Generator], Rollout.Request]
    timeout: float = 30.0
    answers: list[tuple[float, bool, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._loop, args=(k,), daemon=True) for k in range(self.clients)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _loop(self, k: int) -> None:
        rng = np.random.default_rng(k)
        while not self._stop.is_set():
            resp, trip = self.client.call(self.make_request(rng), self.timeout)
            with self._lock:
                self.answers.append(
                    (trip, resp is not None and resp.success, "timeout" if resp is None else resp.message)
                )

    def summary(self, since: int = 0) -> dict[str, Any]:
        """Answers from index ``since`` on: counts, failures and round-trip percentiles (s)."""
        with self._lock:
            answers = self.answers[since:]
        trips = np.array([t for t, ok, _ in answers if ok])
        failures = [m for _, ok, m in answers if not ok]
        q = np.percentile(trips, [50, 99]) if trips.size else [None, None]
        return {
            "answers": int(trips.size),
            "failures": len(failures),
            "timeouts": failures.count("timeout"),
            "failure_messages": sorted(set(failures))[:5],
            "answer_s": {
                "median": round(float(q[0]), 3) if trips.size else None,
                "p99": round(float(q[1]), 3) if trips.size else None,
                "max": round(float(trips.max()), 3) if trips.size else None,
            },
        }


def rollout_request(
    robot: RobotConfig,
    base: np.ndarray,
    n: int,
    horizon: int,
    rng: np.random.Generator,
    seed: int = -1,
    return_frames: bool = True,
) -> Rollout.Request:
    """N candidates around ``base`` (a recorded command), as a sampling MPC would send them."""
    acts = base + rng.normal(0, 0.02, (n, horizon, robot.stride, robot.action_dim)).astype(np.float32)
    request = Rollout.Request(num_candidates=n, horizon=horizon, action_dim=robot.action_dim, seed=seed)
    request.return_frames = return_frames
    request.candidate_actions = acts.reshape(-1).tolist()
    return request


class ToolError(RuntimeError):
    """Something a load tool cannot go on with; the text says what."""


class Session:
    """A world model node in its own process, driven from this one: a client (spinning on its
    own executor thread), a :class:`Feeder` and the node process. Entering starts the node,
    waits until it is active and has discovered the feeder, and starts feeding; leaving stops
    all of it (the node with SIGINT). :attr:`exit` holds the node's (exit code, seconds)."""

    def __init__(
        self,
        name: str,
        recording: Recording,
        params: dict[str, Any],
        log: Any,
        signals: Any,
        camera_hz: float = 10.0,
        command_hz: float | None = None,
        joint_hz: float = 0.0,
    ) -> None:
        self.client = WorldModelClient(name)
        self.feeder = Feeder(self.client.node, recording, camera_hz, command_hz, joint_hz)
        self.params, self.log, self.signals = params, log, signals
        self.world: NodeProcess | None = None
        self.exit: tuple[int, float] | None = None
        self._spinner: Any = None

    def __enter__(self) -> Session:
        self._spinner = spin.ExecutorThread(self.client.node).start()
        try:
            self.world = NodeProcess("world_model", self.params, log=self.log)
            if why := self.client.wait_until_active(self.world.alive, abort=lambda: bool(self.signals)):
                raise ToolError(f"{why}\n{self.world.log_tail()}")
            if not spin.wait_until(lambda: self.feeder.subscribers() >= 1, timeout=15.0):
                raise ToolError("the world model does not subscribe to the robot's topics")
            self.feeder.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def stop_node(self) -> tuple[int, float]:
        """Stop feeding, then the node (SIGINT); its (exit code, seconds to exit)."""
        self.feeder.stop()
        if self.exit is None and self.world is not None:
            self.exit = self.world.stop()
        return self.exit

    def __exit__(self, *exc: Any) -> None:
        self.stop_node()
        self._spinner.stop()
        self.client.destroy()


@contextlib.contextmanager
def tool_context() -> Iterator[spin.StopSignals]:
    """A tool's ROS context of its own: loopback discovery, a random domain unless ROS_DOMAIN_ID
    is set (the node processes it starts inherit both), SIGINT/SIGTERM recorded in the yielded
    signals instead of raising; rclpy is shut down on leaving."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))
    signals = spin.StopSignals().install()
    spin.init([])  # not sys.argv: rcl would read the tool's own arguments as remap rules
    try:
        yield signals
    finally:
        spin.shutdown()


def ros_tool(name: str, body: Callable[[Any], int]) -> int:
    """Run a load tool's ``body(signals)`` in a :func:`tool_context`; a ToolError or ValueError
    is one line on stderr and exit 1."""
    with tool_context() as signals:
        try:
            return body(signals)
        except (ToolError, ValueError) as e:
            logging.getLogger("hma_ros.demo").error(f"{name}: error: {e}")
            return 1
