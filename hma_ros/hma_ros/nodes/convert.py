"""numpy <-> ROS message conversions for the nodes (cv_bridge is not available from PyPI).

Only message types are imported here, never rclpy, so everything is testable without a
ROS graph. Images become ``uint8`` RGB ``(H, W, 3)`` arrays, the layout the runtime core
uses (docs/architecture.md); resizing always goes through :func:`hma_ros.runtime.image.fit_image`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image, JointState

from hma_ros.runtime.image import fit_image

#: encoding -> (channels, channel order as indices into RGB(A)). Anything else is refused.
ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}


class ConversionError(ValueError):
    """A message that cannot be converted; the text says which field is wrong."""


def image_to_numpy(msg: Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``uint8`` RGB ``(H, W, 3)``, optionally fitted to ``size`` (h, w).

    Respects ``step`` (row padding). ``is_bigendian`` is irrelevant for 8-bit encodings but a
    malformed message is still refused. Alpha is dropped; mono8 is replicated to 3 channels.
    """
    enc = msg.encoding.lower()
    if enc not in ENCODINGS:
        raise ConversionError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}")
    channels, order = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 1 or w < 1:
        raise ConversionError(f"image has no pixels (height={h}, width={w})")
    if step < w * channels:
        raise ConversionError(f"image step={step} is smaller than width*channels={w * channels} for {enc}")
    data = np.frombuffer(msg.data, np.uint8)  # bytes or array('B'): no copy
    if data.size < step * h:
        raise ConversionError(f"image data has {data.size} bytes, expected step*height={step * h}")
    rows = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    rgb = np.ascontiguousarray(rows[..., list(order)])
    if size is not None:
        rgb = fit_image(rgb, size)
    return rgb


def numpy_to_image(
    img: np.ndarray,
    encoding: str = "rgb8",
    stamp: Time | None = None,
    frame_id: str = "",
) -> Image:
    """``uint8`` RGB ``(H, W, 3)`` (or ``(H, W)`` for mono8) -> ``sensor_msgs/Image`` without padding."""
    enc = encoding.lower()
    if enc not in ENCODINGS:
        raise ConversionError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ConversionError(f"image must be uint8, got {img.dtype}")
    channels, order = ENCODINGS[enc]
    if enc == "mono8":
        if img.ndim == 3 and img.shape[-1] == 3:
            img = np.rint(img @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
        if img.ndim != 2:
            raise ConversionError(f"mono8 image must be (H, W) or (H, W, 3), got {img.shape}")
        out = img
    else:
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ConversionError(f"image must be (H, W, 3) RGB, got {img.shape}")
        out = img[..., list(order)]
        if channels == 4:
            out = np.concatenate([out, np.full((*img.shape[:2], 1), 255, np.uint8)], axis=-1)
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = enc
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = np.ascontiguousarray(out).tobytes()
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
