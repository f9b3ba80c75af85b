"""Camera images for the model, identically for training data and live input.

* :func:`fit_image`: data generation, the importers and the ROS node all go through it, so the
  model sees the same preprocessing in training and on the robot: centre-crop to the target
  aspect ratio, then area-average down (or bilinear up) to the target size. Plain numpy: the
  node fits camera frames in its executor thread, and a torch op there would slow the model
  thread down 3x (a second OpenMP team on 2 cores; docs/executors.md).
* :func:`decode_image` / :func:`encode_image`: the one ``sensor_msgs/Image`` codec (cv_bridge
  is not installable here), ROS-free so the node and the MCAP importer share it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


def center_crop_to_aspect(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Largest centred crop of ``img`` (..., H, W, C) with the aspect ratio of ``size`` (h, w)."""
    H, W = img.shape[-3], img.shape[-2]
    th, tw = size
    # Compare H/W with th/tw in integers to avoid rounding a square image off by one.
    if H * tw > W * th:  # too tall
        new_h = max(1, round(W * th / tw))
        top = (H - new_h) // 2
        return img[..., top : top + new_h, :, :]
    if H * tw < W * th:  # too wide
        new_w = max(1, round(H * tw / th))
        left = (W - new_w) // 2
        return img[..., :, left : left + new_w, :]
    return img


def fit_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop and resize ``img`` (..., H, W, 3) uint8 to ``size`` = (h, w); returns uint8.

    Raises ValueError for anything that is not a uint8 image with 3 channels.
    """
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy image, got {type(img).__name__} {getattr(img, 'dtype', '')}")
    if img.ndim < 3 or img.shape[-1] != 3 or img.shape[-3] < 1 or img.shape[-2] < 1:
        raise ValueError(f"expected an image of shape (..., H, W, 3), got {img.shape}")
    th, tw = int(size[0]), int(size[1])
    if th < 1 or tw < 1:
        raise ValueError(f"target size must be positive, got {size}")
    img = center_crop_to_aspect(img, (th, tw))
    if img.shape[-3:-1] == (th, tw):
        return np.ascontiguousarray(img)
    if img.shape[-3] >= th and img.shape[-2] >= tw:
        out = _area(img, th, tw)  # box filter: no aliasing when shrinking
    else:
        out = _bilinear(img, th, tw)
    return np.rint(out).clip(0, 255).astype(np.uint8)


def _area(img: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Area averaging, the same windows as torch's ``interpolate(mode="area")`` (adaptive average
    pooling: output i averages input [floor(i H / h), ceil((i + 1) H / h))). Sums are exact
    integers (an integral image), so after rounding the result equals torch's float32 one
    (the test pins it), which fitted the shipped models' training frames."""
    H, W = img.shape[-3], img.shape[-2]

    def windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
        i = np.arange(n_out)
        return (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)

    (r0, r1), (c0, c1) = windows(H, th), windows(W, tw)
    integral = np.zeros((*img.shape[:-3], H + 1, W + 1, img.shape[-1]), np.int64)
    integral[..., 1:, 1:, :] = img.cumsum(-3, dtype=np.int64).cumsum(-2)
    r0, r1, c0, c1 = r0[:, None], r1[:, None], c0[None, :], c1[None, :]
    sums = integral[..., r1, c1, :] - integral[..., r0, c1, :] - integral[..., r1, c0, :] + integral[..., r0, c0, :]
    return sums / ((r1 - r0) * (c1 - c0))[..., None]


def _bilinear(img: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Bilinear resampling with half-pixel centres (torch's ``interpolate(mode="bilinear",
    align_corners=False)`` up to float rounding: within 1 of it after rounding), for images
    smaller than the model's resolution; no shipped training frame took this path."""
    f32 = np.float32

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        scale = float(f32(n_in) / f32(n_out))  # a float32 scale, the source index in double, as ATen does
        src = np.maximum(scale * (np.arange(n_out) + 0.5) - 0.5, 0.0).astype(f32)
        i0 = np.minimum(src.astype(np.int64), n_in - 1)
        w1 = (src - i0.astype(f32)).astype(f32)
        return i0, np.minimum(i0 + 1, n_in - 1), (f32(1) - w1).astype(f32), w1

    (r0, r1, hr0, hr1), (c0, c1, wc0, wc1) = taps(img.shape[-3], th), taps(img.shape[-2], tw)
    x = img.astype(f32)
    wc0, wc1 = wc0[:, None], wc1[:, None]
    top = wc0 * x[..., r0, :, :][..., c0, :] + wc1 * x[..., r0, :, :][..., c1, :]
    bottom = wc0 * x[..., r1, :, :][..., c0, :] + wc1 * x[..., r1, :, :][..., c1, :]
    return hr0[:, None, None] * top + hr1[:, None, None] * bottom


# -- sensor_msgs/Image codec (ROS-free: any object with the message's fields) -------------------
#: encoding -> (channels, channel order as indices into RGB(A)). Anything else is refused.
ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
#: Largest image accepted (pixels): 8K video is 33 Mpx. A header claiming more is malformed.
MAX_PIXELS = 64_000_000


class ImageFormatError(ValueError):
    """An image message that cannot be decoded (or an array that cannot be encoded); the text
    names the field."""


class EncodedImage(NamedTuple):
    """The fields of a ``sensor_msgs/Image`` without its header."""

    height: int
    width: int
    encoding: str
    step: int
    data: bytes


def decode_image(msg: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/Image``-like ``msg`` -> ``uint8`` RGB ``(H, W, 3)``, optionally fitted to ``size``.

    ``msg`` is anything with the message's ``encoding``, ``height``, ``width``, ``step`` and
    ``data`` fields: an rclpy message in the node, a decoded MCAP message in the importer.
    Respects ``step`` (row padding); drops alpha; replicates mono8. Raises
    :class:`ImageFormatError` naming the bad field.
    """
    enc = str(msg.encoding).lower()
    if enc not in ENCODINGS:
        raise ImageFormatError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}")
    channels, order = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 1 or w < 1:
        raise ImageFormatError(f"image has no pixels (height={h}, width={w})")
    if h * w > MAX_PIXELS:
        raise ImageFormatError(f"image of {w}x{h} pixels is larger than {MAX_PIXELS} pixels")
    if step < w * channels:
        raise ImageFormatError(f"image step={step} is smaller than width*channels={w * channels} for {enc}")
    data = np.frombuffer(msg.data, np.uint8)  # bytes, memoryview or array('B'): no copy
    if data.size < step * h:
        raise ImageFormatError(f"image data has {data.size} bytes, expected step*height={step * h}")
    rows = data[: step * h].reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    rgb = np.ascontiguousarray(rows[..., list(order)])
    return fit_image(rgb, size) if size is not None else rgb


def encode_image(img: np.ndarray, encoding: str = "rgb8") -> EncodedImage:
    """``uint8`` RGB ``(H, W, 3)`` (or ``(H, W)`` for mono8) -> the fields of an unpadded image message."""
    enc = encoding.lower()
    if enc not in ENCODINGS:
        raise ImageFormatError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ImageFormatError(f"image must be uint8, got {img.dtype}")
    channels, order = ENCODINGS[enc]
    if enc == "mono8":
        if img.ndim == 3 and img.shape[-1] == 3:
            img = np.rint(img @ np.array([0.299, 0.587, 0.114])).clip(0, 255).astype(np.uint8)
        if img.ndim != 2:
            raise ImageFormatError(f"mono8 image must be (H, W) or (H, W, 3), got {img.shape}")
        out = img
    else:
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ImageFormatError(f"image must be (H, W, 3) RGB, got {img.shape}")
        out = img[..., list(order)]
        if channels == 4:
            out = np.concatenate([out, np.full((*img.shape[:2], 1), 255, np.uint8)], axis=-1)
    h, w = int(img.shape[0]), int(img.shape[1])
    return EncodedImage(h, w, enc, w * channels, np.ascontiguousarray(out).tobytes())
