"""numpy <-> ROS message conversions for the nodes (cv_bridge is not available from PyPI).

Only message types are imported here, never rclpy, so everything is testable without a
ROS graph. Images become ``uint8`` RGB ``(H, W, 3)`` arrays, the layout the runtime core
uses (docs/architecture.md), through the ROS-free codec in :mod:`hma_ros.runtime.image`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image, JointState

from hma_ros.runtime.image import decode_image, encode_image


class ConversionError(ValueError):
    """A message that cannot be converted; the text says which field is wrong."""


def image_to_numpy(msg: Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8`` RGB ``(H, W, 3)``, optionally fitted to ``size`` (h, w).

    :func:`hma_ros.runtime.image.decode_image` (shared with the importers); raises
    ``ImageFormatError`` (a ``ValueError``) naming the bad field.
    """
    return decode_image(msg, size)


def numpy_to_image(
    img: np.ndarray,
    encoding: str = "rgb8",
    stamp: Time | None = None,
    frame_id: str = "",
) -> Image:
    """``uint8`` RGB ``(H, W, 3)`` (or ``(H, W)`` for mono8) -> ``sensor_msgs/Image`` without padding."""
    enc = encode_image(img, encoding)
    msg = Image(height=enc.height, width=enc.width, encoding=enc.encoding, is_bigendian=0, step=enc.step)
    msg.data = enc.data
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    sec = math.floor(t)
    nsec = int(round((t - sec) * 1e9))
    if nsec >= 1_000_000_000:
        sec, nsec = sec + 1, nsec - 1_000_000_000
    return Time(sec=int(sec), nanosec=nsec)


def joint_positions(msg: JointState, names: Sequence[str]) -> np.ndarray:
    """Positions of ``names`` (in that order) from a JointState, as float32.

    A message without names is taken positionally (then it must have exactly len(names)
    positions). Missing joints and non-finite values are refused with the joint named.
    """
    pos = list(msg.position)
    if not msg.name:
        if len(pos) != len(names):
            raise ConversionError(f"JointState without names has {len(pos)} positions, expected {len(names)}")
        out = np.asarray(pos, np.float32)
    else:
        if len(msg.name) != len(pos):
            raise ConversionError(f"JointState has {len(msg.name)} names but {len(pos)} positions")
        index = {n: i for i, n in enumerate(msg.name)}
        missing = [n for n in names if n not in index]
        if missing:
            raise ConversionError(f"JointState lacks joints {missing} (has {list(msg.name)})")
        out = np.asarray([pos[index[n]] for n in names], np.float32)
    bad = [names[i] for i in np.flatnonzero(~np.isfinite(out))]
    if bad:
        raise ConversionError(f"JointState has non-finite positions for {bad}")
    return out
