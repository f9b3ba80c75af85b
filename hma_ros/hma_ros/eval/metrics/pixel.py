"""Pixel-space fidelity metrics: PSNR, SSIM, and dPSNR (controllability).

Input protocol (all three): frames ``(..., H, W, 3)``, uint8 in [0, 255] or float in [0, 1],
numpy or torch; computed in float64 on the [0, 1] scale (data range 1) at native
resolution; one value per frame, returned with the leading shape ``(...)``. Average the
returned per-frame values yourself (the video-prediction convention: mean of per-frame
PSNR, not PSNR of the mean error).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from hma_ros.eval.metrics._frames import Frames, check_same_shape, to_float01

# SSIM constants of Wang et al. 2004 ("Image quality assessment: from error visibility to
# structural similarity"): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(pred: Frames, target: Frames) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per frame, ``10 log10(1 / MSE)`` on [0, 1] pixels.

    The MSE is over H, W and the 3 channels of each frame. Identical frames give ``+inf``.
    Returns a float64 tensor shaped like the inputs' leading dims ``(...)``.
    """
    x = to_float01(pred, dtype=torch.float64, name="pred")
    y = to_float01(target, dtype=torch.float64, name="target")
    check_same_shape(x, y, ("pred", "target"))
    mse = (x - y).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: Frames, target: Frames) -> torch.Tensor:
    """Structural similarity per frame (Wang et al. 2004), mean over pixels and channels.

    The standard Gaussian SSIM: local statistics under an 11x11 Gaussian window (sigma 1.5),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = 1, population (not sample) variances, the map
    taken over 'valid' window positions only (no padding), each RGB channel separately and
    the channel means averaged. This equals scikit-image's
    ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1, channel_axis=-1)``. Frames must be at least 11x11.
    Returns a float64 tensor of shape ``(...)``; identical frames give exactly 1.
    """
    x = to_float01(pred, dtype=torch.float64, name="pred")
    y = to_float01(target, dtype=torch.float64, name="target")
    check_same_shape(x, y, ("pred", "target"))
    *lead, h, w, c = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"ssim needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    x = rearrange(x, "... h w c -> (...) c h w")  # (B, 3, H, W)
    y = rearrange(y, "... h w c -> (...) c h w")
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    # Separable Gaussian filter, depthwise over the channels, 'valid' positions only.
    gy = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    gx = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gy, groups=c), gx, groups=c)

    mu_x, mu_y = blur(x), blur(y)  # (B, 3, H-10, W-10)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov_xy = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).reshape(lead)


def _select_last(frames: Frames, axis: int | None) -> Frames:
    if axis is None:
        return frames
    if isinstance(frames, torch.Tensor):
        return frames.select(axis, -1)
    return np.take(frames, -1, axis=axis)


@dataclass(frozen=True)
class DPSNRResult:
    """dPSNR and its parts, all in dB and averaged over samples."""

    dpsnr: float  # psnr_true - psnr_random
    psnr_true: float  # PSNR of the true-action rollout's compared frame
    psnr_random: float  # PSNR of the random-action rollouts' compared frame, mean over trials
    per_sample: torch.Tensor  # (N,) dPSNR of each sample, float64


def dpsnr(
    true_action_frames: Frames,
    random_action_frames_list: Sequence[Frames],
    ground_truth: Frames,
    *,
    time_axis: int | None = 1,
) -> DPSNRResult:
    """Controllability as in HMA (arXiv 2502.04296) and IRASim: PSNR with the true actions
    minus PSNR with random actions, on the last predicted frame.

    Model-agnostic: pass the frames the model predicted from the same context with the true
    actions (``true_action_frames``) and with each of K random action sequences
    (``random_action_frames_list``, the paper uses K = 5 trials drawn in the normalised
    action space; see ``sample_normalized_random_actions``), and the ground-truth frames.

    Shapes: all ``(N, T, H, W, 3)`` with ``time_axis=1`` (the default: the frame at index -1
    along that axis is compared), or already the frames to compare, ``(N, H, W, 3)``, with
    ``time_axis=None``. uint8 or [0, 1] floats. Per sample:
    ``PSNR(true) - mean_k PSNR(random_k)``; the result averages that over the N samples.
    """
    if len(random_action_frames_list) == 0:
        raise ValueError("random_action_frames_list is empty: need at least one random-action rollout")

    gt = _select_last(ground_truth, time_axis)
    p_true = psnr(_select_last(true_action_frames, time_axis), gt)  # (N,)
    p_rand = torch.stack([psnr(_select_last(f, time_axis), gt) for f in random_action_frames_list]).mean(dim=0)  # (N,)
    per_sample = p_true - p_rand
    return DPSNRResult(
        dpsnr=float(per_sample.mean()),
        psnr_true=float(p_true.mean()),
        psnr_random=float(p_rand.mean()),
        per_sample=per_sample,
    )


def sample_normalized_random_actions(
    shape: Sequence[int],
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random actions for dPSNR: standard normal in the z-scored action space, mapped back
    to raw units with the embodiment's action statistics (``raw = z * std + mean``).

    ``shape`` ends with the action dimension, which must match ``mean`` and ``std``. The
    stems z-score actions, so N(0, 1) there is the "normalised action space" of the paper.
    """
    mean = torch.as_tensor(mean, dtype=torch.float32)
    std = torch.as_tensor(std, dtype=torch.float32)
    if mean.shape != std.shape or tuple(shape)[-1:] != tuple(mean.shape):
        raise ValueError(
            f"action stats shaped {tuple(mean.shape)}/{tuple(std.shape)} do not match actions {tuple(shape)}"
        )
    z = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    return z * std + mean
