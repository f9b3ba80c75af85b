"""Frame conversion shared by every metric.

All metrics take frames channel-last, ``(..., H, W, 3)``, as numpy arrays or torch tensors,
either ``uint8`` in [0, 255] or floating point in [0, 1]. This module turns them into
floating torch tensors in [0, 1] and provides the one resize every feature network uses.
"""

from __future__ import annotations

import numpy as np
import torch

Frames = np.ndarray | torch.Tensor

# Floats a little outside [0, 1] come from rounding in a decoder; more than this means the
# caller passed [0, 255] or [-1, 1] floats, which would silently give wrong numbers.
_RANGE_SLACK = 1e-3


def to_float01(frames: Frames, *, dtype: torch.dtype = torch.float32, name: str = "frames") -> torch.Tensor:
    """Return ``frames`` as a ``dtype`` tensor in [0, 1], shape kept ``(..., H, W, 3)``.

    uint8 is divided by 255; floating input must already lie in [0, 1] (clamped after a
    small tolerance). Anything else raises ``ValueError`` naming ``name``.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(frames).__name__}")
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected frames shaped (..., H, W, 3), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected uint8 or float frames, got {x.dtype}")
    if x.numel() and (x.min() < -_RANGE_SLACK or x.max() > 1 + _RANGE_SLACK):
        raise ValueError(
            f"{name}: float frames must lie in [0, 1], got range "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]; pass uint8 for [0, 255] data"
        )
    return x.to(dtype).clamp(0.0, 1.0)


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _tf_legacy_weights(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_out, n_in) matrix of TF1 ``resize_bilinear`` (align_corners=False, no half-pixel
    centres): output pixel i samples input coordinate ``i * n_in / n_out``, clamped at the
    last pixel."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo.to(torch.float64)
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    w[torch.arange(n_out), lo] += 1.0 - frac
    w[torch.arange(n_out), hi] += frac
    return w.to(dtype=dtype, device=device)


def resize_bilinear_tf(x_nchw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` exactly as TF1 ``tf.image.resize_bilinear``.

    This is the resize of the reference FID (TF Inception graph, and NVIDIA's port of it)
    and of the reference FVD code (Unterthiner et al. 2019), so our features see the same
    pixels theirs did. It differs from ``F.interpolate(..., align_corners=False)``, which
    uses half-pixel centres. No anti-aliasing (the references have none).
    """
    _, _, h, w = x_nchw.shape
    if (h, w) == tuple(size):
        return x_nchw
    wy = _tf_legacy_weights(h, size[0], x_nchw.dtype, x_nchw.device)  # (H', H)
    wx = _tf_legacy_weights(w, size[1], x_nchw.dtype, x_nchw.device)  # (W', W)
    return torch.einsum("yh,nchw,xw->ncyx", wy, x_nchw, wx)
