"""Discrete tokenizer: a small convolutional autoencoder with finite scalar quantisation.

FSQ (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple") replaces a
learned codebook by rounding each of ``d`` latent channels to one of ``L_i`` levels; the
implicit codebook has ``prod(L_i)`` entries, needs no commitment loss or codebook
maintenance, and is fully used in practice. We group the ``d`` channels into
``num_factors`` equal groups so the vocabulary factorises, as HMA's model needs (paper:
2^18 = 512 x 512; ours: levels (8, 8, 8, 8) = 4096 = 64 x 64).

Token id layout (row-major mixed radix, first level most significant, as
``np.ravel_multi_index``): with digits ``c_i in [0, L_i)``,
``id = ((c_0 * L_1 + c_1) * L_2 + c_2) * L_3 + c_3`` and, for two factors of two levels,
``id = f_0 * V_1 + f_1`` with ``f_0 = c_0 * L_1 + c_1``, ``f_1 = c_2 * L_3 + c_3``.
:func:`split_factors` / :func:`merge_factors` convert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from .base import Tokenizer, as_pair, check, float_to_frames, frames_to_float


def split_factors(ids: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """Token ids ``(...)`` -> per-factor ids ``(..., len(factors))`` (first factor most significant)."""
    out = []
    for v in reversed(factors):
        out.append(ids % v)
        ids = torch.div(ids, v, rounding_mode="floor")
    return torch.stack(out[::-1], dim=-1)


def merge_factors(fids: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`split_factors`: ``(..., len(factors))`` -> ``(...)``."""
    ids = torch.zeros_like(fids[..., 0])
    for i, v in enumerate(factors):
        ids = ids * v + fids[..., i]
    return ids


class FSQ(nn.Module):
    """Finite scalar quantiser over the channel dim of ``(B, d, h, w)`` (Mentzer et al. 2023)."""

    def __init__(self, levels: tuple[int, ...], eps: float = 1e-3) -> None:
        super().__init__()
        self.levels = tuple(levels)
        L = torch.tensor(self.levels, dtype=torch.float32)
        half_l = (L - 1) * (1 + eps) / 2  # (1 + eps) keeps atanh finite for L = 2
        offset = torch.where(L % 2 == 0, 0.5, 0.0)
        # Buffers are derived from the config, so they are not saved (persistent=False).
        self.register_buffer("half_l", half_l.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("offset", offset.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half_l).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("half_width", (L // 2).view(1, -1, 1, 1), persistent=False)
        radix = [math.prod(self.levels[i + 1 :]) for i in range(len(self.levels))]
        self.register_buffer("radix", torch.tensor(radix).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("levels_t", L.long().view(1, -1, 1, 1), persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash to the open interval that rounds onto exactly ``L`` integers (even L: offset)."""
        return torch.tanh(z + self.shift) * self.half_l - self.offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Quantise with a straight-through gradient; returns codes scaled to about [-1, 1]."""
        zb = self.bound(z)
        zq = zb + (zb.round() - zb).detach()
        return zq / self.half_width

    def codes_to_ids(self, zq: torch.Tensor) -> torch.Tensor:
        """Scaled codes ``(B, d, h, w)`` -> ids ``(B, h, w)``."""
        digits = (zq * self.half_width).round().long() + self.half_width.long()  # (B, d, h, w) in [0, L)
        return (digits * self.radix).sum(dim=1)

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids ``(B, h, w)`` -> scaled codes ``(B, d, h, w)``."""
        digits = torch.div(ids.unsqueeze(1), self.radix, rounding_mode="floor") % self.levels_t
        return (digits - self.half_width).float() / self.half_width


class ResBlock(nn.Module):
    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.GroupNorm(groups, ch),
            nn.SiLU(),
            nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Upsample(nn.Module):
    """Conv to ``4 * out`` channels then pixel shuffle: all compute at the low resolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.conv(x), "b (c p q) h w -> b c (h p) (w q)", p=2, q=2)


@dataclass(frozen=True)
class FSQConfig:
    """Architecture of an :class:`FSQTokenizer`.

    Attributes:
        image_size: (H, W) of the frames; each must be divisible by ``2 ** len(channels)``.
        channels: conv widths after each stride-2 stage (64x64 with 3 stages -> 8x8 grid).
        levels: FSQ levels per latent channel; the vocabulary is their product.
        num_factors: split ``levels`` into this many equal contiguous groups; each group's
            product is one entry of ``vocab_factors``.
        low_res_blocks: residual blocks at the grid resolution, in encoder and decoder.
        groups: GroupNorm groups (must divide every width).
    """

    image_size: tuple[int, int] = (64, 64)
    channels: tuple[int, ...] = (32, 48, 96)
    levels: tuple[int, ...] = (8, 8, 8, 8)
    num_factors: int = 2
    low_res_blocks: int = 2
    groups: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", as_pair(self.image_size, "image_size"))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "levels", tuple(int(v) for v in self.levels))
        check(len(self.channels) >= 1, f"channels must not be empty, got {self.channels!r}")
        down = 2 ** len(self.channels)
        check(
            all(s % down == 0 for s in self.image_size),
            f"image_size {self.image_size} must be divisible by 2**len(channels) = {down}",
        )
        check(
            all(c > 0 and c % self.groups == 0 for c in self.channels),
            f"channels {self.channels} must be positive multiples of groups={self.groups}",
        )
        check(all(v >= 2 for v in self.levels), f"every FSQ level must be >= 2, got {self.levels!r}")
        check(
            self.num_factors >= 1 and len(self.levels) % self.num_factors == 0,
            f"num_factors={self.num_factors} must divide len(levels)={len(self.levels)}",
        )
        check(self.low_res_blocks >= 0, f"low_res_blocks must be >= 0, got {self.low_res_blocks}")


class FSQTokenizer(Tokenizer):
    """Frames -> 8x smaller grid of FSQ token ids (64x64 -> 8x8, vocab 4096 = 64 x 64)."""

    type_name = "fsq"
    kind = "discrete"
    config_class = FSQConfig

    def __init__(self, config: FSQConfig | None = None) -> None:
        super().__init__(config or FSQConfig())
        cfg = self.config
        ch, g, d = cfg.channels, cfg.groups, len(cfg.levels)
        enc: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        prev = ch[0]
        for i, c in enumerate(ch):
            enc.append(nn.Conv2d(prev, c, 4, stride=2, padding=1))  # (B, c, H/2^(i+1), W/2^(i+1))
            n_blocks = cfg.low_res_blocks if i == len(ch) - 1 else 1
            enc += [ResBlock(c, g) for _ in range(n_blocks)]
            prev = c
        enc += [nn.GroupNorm(g, prev), nn.SiLU(), nn.Conv2d(prev, d, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = FSQ(cfg.levels)
        dec: list[nn.Module] = [nn.Conv2d(d, ch[-1], 3, padding=1)]
        dec += [ResBlock(ch[-1], g) for _ in range(cfg.low_res_blocks)]
        for i in range(len(ch) - 1, 0, -1):
            dec.append(Upsample(ch[i], ch[i - 1]))
            dec.append(ResBlock(ch[i - 1], g))
        dec += [nn.GroupNorm(g, ch[0]), nn.SiLU(), Upsample(ch[0], 3)]
        self.decoder = nn.Sequential(*dec)

    @property
    def grid(self) -> tuple[int, int]:
        down = 2 ** len(self.config.channels)
        return (self.config.image_size[0] // down, self.config.image_size[1] // down)

    @property
    def vocab_factors(self) -> tuple[int, ...]:
        lv, n = self.config.levels, self.config.num_factors
        k = len(lv) // n
        return tuple(math.prod(lv[i * k : (i + 1) * k]) for i in range(n))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: float ``(B, 3, H, W)`` in [-1, 1] -> (reconstruction, codes)."""
        zq = self.quantizer(self.encoder(x))  # (B, d, h, w)
        return self.decoder(zq), zq

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        zq = self.quantizer(self.encoder(frames_to_float(frames)))  # (B, d, h, w)
        return self.quantizer.codes_to_ids(zq)  # (B, h, w)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return float_to_frames(self.decoder(self.quantizer.ids_to_codes(tokens)))  # (B, H, W, 3)
