"""Read and write rosbag2 MCAP recordings without ROS: what importers, tests and tools share.

- :func:`iter_raw` yields every message's CDR bytes with its type name: a ROS node can
  publish those bytes as they are (``Publisher.publish`` takes serialized messages) or turn
  them into real rclpy objects with ``rclpy.serialization.deserialize_message``.
- :func:`iter_messages` yields decoded messages whose attributes carry the ROS field names
  (``msg.header.stamp.sec``, ``msg.data``, ``msg.position``...), decoded from the schemas
  stored in the file, so any message type works.
- :class:`McapWriter` writes ROS 2 messages given as dicts, with zstd chunk compression and
  the ``ros2`` profile rosbag2 expects; the message definitions come from the Kilted type
  store of ``rosbags`` (no ROS installation needed).

A path may be a ``.mcap`` file or a rosbag2 folder (``metadata.yaml`` + ``*.mcap``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hma_ros.runtime.image import encode_image

ROS2_PROFILE = "ros2"


@dataclass(frozen=True)
class RawMessage:
    topic: str
    msgtype: str  # "sensor_msgs/msg/Image"
    log_time_ns: int
    cdr: bytes


def bag_files(path: str | os.PathLike) -> list[Path]:
    """The ``.mcap`` files of a recording: the file itself, or a rosbag2 folder's files in order."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(p.glob("*.mcap"))
        if files:
            return files
        raise FileNotFoundError(f"{p}: a folder without .mcap files (only MCAP rosbag2 storage is supported)")
    raise FileNotFoundError(f"{p}: no such recording")


def topics(path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """Topic -> (message type, message count) from the MCAP summaries."""
    from mcap.reader import make_reader

    out: dict[str, tuple[str, int]] = {}
    for file in bag_files(path):
        with open(file, "rb") as f:
            summary = make_reader(f).get_summary()
        if summary is None:
            continue
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        for cid, ch in summary.channels.items():
            name = summary.schemas[ch.schema_id].name if ch.schema_id in summary.schemas else ""
            old = out.get(ch.topic, (name, 0))[1]
            out[ch.topic] = (name, old + counts.get(cid, 0))
    return out


def iter_raw(path: str | os.PathLike, topics: Iterable[str] | None = None) -> Iterator[RawMessage]:
    """Every message (of ``topics``, or all) in log-time order, as CDR bytes."""
    from mcap.reader import make_reader

    wanted = list(topics) if topics is not None else None
    for file in bag_files(path):
        with open(file, "rb") as f:
            for schema, channel, message in make_reader(f).iter_messages(topics=wanted, log_time_order=True):
                yield RawMessage(channel.topic, schema.name if schema else "", message.log_time, bytes(message.data))


def iter_messages(path: str | os.PathLike, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
    """``(topic, stamp_ns, msg)`` in log-time order; ``stamp_ns`` is ``header.stamp`` when the
    message has a non-zero one, else the log time; ``msg`` has the ROS field names."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    wanted = list(topics) if topics is not None else None
    for file in bag_files(path):
        with open(file, "rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            for _, channel, message, msg in reader.iter_decoded_messages(topics=wanted, log_time_order=True):
                yield channel.topic, message_stamp_ns(msg, message.log_time), msg


def message_stamp_ns(msg: Any, default: int) -> int:
    header = getattr(msg, "header", None)
    if header is None:
        return int(default)
    ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return ns if ns > 0 else int(default)


def stamp(ns: int) -> dict[str, int]:
    """A ``builtin_interfaces/Time`` dict for ``ns`` nanoseconds."""
    return {"sec": int(ns // 1_000_000_000), "nanosec": int(ns % 1_000_000_000)}


class McapWriter:
    """Write ROS 2 messages (as dicts) to a single-file rosbag2 MCAP.

    >>> with McapWriter("out.mcap") as w:
    ...     w.write("/joint_command", "sensor_msgs/msg/JointState", {...}, t_ns)
    """

    def __init__(self, path: str | os.PathLike, compression: str = "zstd", chunk_size: int = 1 << 20):
        from mcap.writer import CompressionType
        from mcap_ros2.writer import Writer
        from rosbags.typesys import Stores, get_typestore

        comp = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
        if compression not in comp:
            raise ValueError(f"compression must be one of {sorted(comp)}, got {compression!r}")
        self._file = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._writer = Writer(self._file, chunk_size=chunk_size, compression=comp[compression])
        self._store = get_typestore(Stores.ROS2_KILTED)
        self._schemas: dict[str, Any] = {}

    def write(self, topic: str, msgtype: str, message: dict[str, Any], log_time_ns: int) -> None:
        if msgtype not in self._schemas:
            text, _ = self._store.generate_msgdef(msgtype, ros_version=2)
            self._schemas[msgtype] = self._writer.register_msgdef(msgtype, text)
        self._writer.write_message(
            topic, self._schemas[msgtype], message, log_time=int(log_time_ns), publish_time=int(log_time_ns)
        )

    def close(self) -> None:
        self._writer.finish()
        self._file.close()

    def __enter__(self) -> McapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def image_msg(frame, stamp_ns: int, frame_id: str = "camera", encoding: str = "rgb8") -> dict[str, Any]:
    """A ``sensor_msgs/msg/Image`` dict for an (H, W, 3) uint8 RGB array (``runtime.image.encode_image``)."""
    return {"header": {"stamp": stamp(stamp_ns), "frame_id": frame_id}, "is_bigendian": 0} | encode_image(
        frame, encoding
    )._asdict()


def joint_state_msg(names, positions, stamp_ns: int, velocities=(), frame_id: str = "") -> dict[str, Any]:
    """A ``sensor_msgs/msg/JointState`` dict."""
    return {
        "header": {"stamp": stamp(stamp_ns), "frame_id": frame_id},
        "name": list(names),
        "position": [float(p) for p in positions],
        "velocity": [float(v) for v in velocities],
        "effort": [],
    }
