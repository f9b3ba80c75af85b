"""Play a rosbag2 MCAP recording onto its topics with the original timing.

A stand-in for ``ros2 bag play`` (ros2cli is not installable from PyPI) that the demo and the
tests use to feed the world model node; reading is ``hma_ros.data.rosbag`` (an ``.mcap`` file
or a rosbag2 folder). Messages are published as the recorded CDR bytes, untouched (headers
keep their recorded stamps), at the recorded log-time spacing divided by ``rate``. With
``publish_clock`` it also publishes ``/clock`` from the recording's log time, like
``ros2 bag play --clock``, for nodes running with ``use_sim_time``.

    python -m hma_ros.nodes.bag_replay --ros-args -p bag:=path/to/recording.mcap -p loop:=true
"""

from __future__ import annotations

import importlib
import threading
import time
from pathlib import Path

import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock

from hma_ros.data.rosbag import iter_raw
from hma_ros.data.rosbag import topics as bag_topics
from hma_ros.nodes import spin
from hma_ros.paths import share_dir

DEFAULT_BAG = "data/franka_demo.mcap"  # relative to the share dir


def message_class(type_name: str) -> type:
    """``"sensor_msgs/msg/Image"`` -> the Python message class; ValueError if unknown here."""
    parts = type_name.split("/")
    if len(parts) == 2:  # "sensor_msgs/Image" (older writers)
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"cannot parse message type name {type_name!r}")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError) as e:
        raise ValueError(f"message type {type_name!r} is not installed here: {e}") from e


def resolve_bag(bag: str | Path) -> Path:
    """A recording path as given, else relative to the share dir; ValueError if neither exists."""
    p = Path(bag).expanduser()
    for cand in (p, share_dir() / p) if not p.is_absolute() else (p,):
        if cand.exists():  # an .mcap file or a rosbag2 folder
            return cand.resolve()
    raise ValueError(f"recording {bag!r} not found (looked in the cwd and {share_dir()})")


class BagReplay(Node):
    """Publishes a recording on a background thread; ``finished`` is set at its end (no loop)."""

    def __init__(self, **kwargs) -> None:
        super().__init__("bag_replay", **kwargs)

        def desc(text: str, **kw) -> ParameterDescriptor:
            return ParameterDescriptor(description=text, read_only=True, **kw)

        bag = self.declare_parameter(
            "bag",
            DEFAULT_BAG,
            desc("rosbag2 .mcap file; a relative path is looked up in the cwd, then the share dir"),
        ).value
        self.rate = self.declare_parameter(
            "rate",
            1.0,
            desc(
                "playback speed factor (2.0 = twice as fast)",
                floating_point_range=[FloatingPointRange(from_value=0.01, to_value=100.0)],
            ),
        ).value
        self.loop = self.declare_parameter("loop", False, desc("restart at the end of the recording")).value
        self.start_offset = self.declare_parameter(
            "start_offset",
            0.0,
            desc(
                "seconds into the recording to start from",
                floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1e9)],
            ),
        ).value
        topics = self.declare_parameter(
            "topics",
            Parameter.Type.STRING_ARRAY,
            desc("topics to play (unset or empty: all)", type=ParameterType.PARAMETER_STRING_ARRAY),
        ).value
        self.topics = [t for t in (topics or []) if t]
        self.publish_clock = self.declare_parameter(
            "publish_clock", False, desc("publish /clock from the recording's log time")
        ).value
        self.wait_for_subscribers = self.declare_parameter(
            "wait_for_subscribers",
            0,
            desc(
                "before playing, wait (up to wait_timeout s) until every topic has this many subscribers: "
                "DDS discovery can take seconds, and messages published before it are lost",
                integer_range=[IntegerRange(from_value=0, to_value=100, step=1)],
            ),
        ).value
        self.wait_timeout = self.declare_parameter(
            "wait_timeout",
            15.0,
            desc(
                "seconds to wait for wait_for_subscribers",
                floating_point_range=[FloatingPointRange(from_value=0.0, to_value=600.0)],
            ),
        ).value

        self.path = resolve_bag(bag)
        info = {t: v for t, v in bag_topics(self.path).items() if v[0]}  # CDR channels with a schema
        if self.topics:
            missing = sorted(set(self.topics) - set(info))
            if missing:
                raise ValueError(f"topics {missing} are not in {self.path} (it has {sorted(info)})")
            info = {t: info[t] for t in self.topics}
        self._topic_pubs = {}
        for topic, (type_name, count) in sorted(info.items()):
            try:
                self._topic_pubs[topic] = self.create_publisher(message_class(type_name), topic, 10)
                self.get_logger().info(f"{topic} [{type_name}]: {count} messages")
            except ValueError as e:
                self.get_logger().warning(f"skipping {topic}: {e}")
        if not self._topic_pubs:
            raise ValueError(f"nothing to play in {self.path}")
        self._clock_pub = self.create_publisher(Clock, "/clock", 10) if self.publish_clock else None
        self.published = 0
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="bag_replay", daemon=True)
        self._thread.start()

    def _wait_for_subscribers(self) -> None:
        want, deadline = self.wait_for_subscribers, time.monotonic() + self.wait_timeout
        counts = {}
        while want and not self._stop.is_set():
            counts = {t: pub.get_subscription_count() for t, pub in self._topic_pubs.items()}
            if min(counts.values()) >= want:
                return
            if time.monotonic() > deadline:
                self.get_logger().warning(
                    f"playing without {want} subscribers on every topic after {self.wait_timeout:g} s: {counts}"
                )
                return
            self._stop.wait(0.02)

    def _play(self) -> None:
        log = self.get_logger()
        passes = 0
        self._wait_for_subscribers()
        while not self._stop.is_set():
            first_ns = None
            t0 = time.monotonic()
            n = 0
            for raw in iter_raw(self.path, list(self._topic_pubs)):
                topic, log_ns, data = raw.topic, raw.log_time_ns, raw.cdr
                if first_ns is None:
                    first_ns = log_ns
                offset = (log_ns - first_ns) * 1e-9 - self.start_offset
                if offset < 0:
                    continue
                delay = t0 + offset / self.rate - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                try:
                    if self._clock_pub is not None:
                        self._clock_pub.publish(_clock(log_ns))
                    self._topic_pubs[topic].publish(data)
                except Exception as e:  # noqa: BLE001 - context shut down under us: stop quietly
                    if not self._stop.is_set():
                        log.error(f"publishing {topic} failed: {e}")
                    return
                n += 1
            self.published += n
            passes += 1
            log.info(f"played {n} messages from {self.path.name} (pass {passes})")
            if not self.loop or n == 0:
                break
        self.finished.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()


def _clock(log_ns: int) -> Clock:
    msg = Clock()
    msg.clock.sec, msg.clock.nanosec = divmod(int(log_ns), 1_000_000_000)
    return msg


def main(args: list[str] | None = None) -> int:
    """Replay until the recording ends (no loop) or SIGINT/SIGTERM; exit 0 either way."""
    signals = spin.StopSignals().install(watch_parent=True)
    spin.init(args)
    try:
        node = BagReplay()
    except ValueError as e:
        rclpy.logging.get_logger("bag_replay").error(str(e))
        spin.shutdown()
        return 1
    spinner = spin.ExecutorThread(node).start()  # parameter services; the replay has its own thread
    try:
        spin.wait_until(lambda: bool(signals) or node.finished.is_set() or not spinner.alive())
    finally:
        node.stop()  # the replay thread publishes: it goes before the executor and the context
        spinner.stop()
        node.destroy_node()
        spin.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
