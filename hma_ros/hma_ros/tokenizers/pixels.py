"""Pixel-space "tokenizer": identity plus patching, for the paper's pixel-space variant.

Each ``patch x patch`` block of RGB pixels, scaled to [-1, 1], is one continuous token of
``3 * patch^2`` floats (64x64 frames, patch 8 -> an 8x8 grid of 192-dim tokens). There are
no weights; ``decode(encode(x)) == x`` exactly for uint8 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from .base import Tokenizer, as_pair, check, float_to_frames, frames_to_float


@dataclass(frozen=True)
class PixelConfig:
    """Attributes:
    image_size: (H, W), divisible by ``patch``.
    patch: pixels per token side.
    """

    image_size: tuple[int, int] = (64, 64)
    patch: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", as_pair(self.image_size, "image_size"))
        check(self.patch >= 1, f"patch must be >= 1, got {self.patch}")
        check(
            all(s % self.patch == 0 for s in self.image_size),
            f"image_size {self.image_size} must be divisible by patch={self.patch}",
        )


class PixelTokenizer(Tokenizer):
    type_name = "pixels"
    kind = "continuous"
    config_class = PixelConfig

    def __init__(self, config: PixelConfig | None = None) -> None:
        super().__init__(config or PixelConfig())

    @property
    def grid(self) -> tuple[int, int]:
        return (self.config.image_size[0] // self.config.patch, self.config.image_size[1] // self.config.patch)

    @property
    def token_dim(self) -> int:
        return 3 * self.config.patch**2

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        p = self.config.patch
        return rearrange(frames_to_float(frames), "b c (h p) (w q) -> b h w (c p q)", p=p, q=p)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        p = self.config.patch
        return float_to_frames(rearrange(tokens, "b h w (c p q) -> b c (h p) (w q)", p=p, q=p))
