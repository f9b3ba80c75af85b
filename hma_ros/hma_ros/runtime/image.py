"""Fit camera images to the model's resolution, identically for training data and live input.

Data generation and the ROS node both go through :func:`fit_image`, so the model sees the
same preprocessing in training and on the robot: centre-crop to the target aspect ratio,
then area-average down (or bilinear up) to the target size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


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
    lead = img.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(img)).reshape(-1, *img.shape[-3:])
    x = x.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    if img.shape[-3] >= th and img.shape[-2] >= tw:
        x = F.interpolate(x, size=(th, tw), mode="area")  # box filter: no aliasing when shrinking
    else:
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out.reshape(*lead, th, tw, 3)
