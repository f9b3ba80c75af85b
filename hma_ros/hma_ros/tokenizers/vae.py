"""Continuous tokenizer: a small diffusers ``AutoencoderKL`` plus HMA's 2x2 patch grouping.

The paper's continuous variant uses VAE latents at 8x downsampling grouped into 2x2
patches. At our 64x64 frames that would leave a 4x4 grid, too coarse for the trunk, so we
deliberately use a 4x-downsampling VAE (two stride-2 stages: 64x64x3 -> 16x16x4) and keep
the paper's patch 2: the token grid is 8x8, like the FSQ tokenizer's, and each token is
``latent_channels * 2 * 2 = 16`` floats. Encoding takes the posterior mean (deterministic,
so a tokenised dataset is reproducible) and normalises each latent channel with a shift and
scale measured on training data (stored as buffers) so the diffusion head sees ~unit variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from .base import Tokenizer, as_pair, check, float_to_frames, frames_to_float


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a :class:`VAETokenizer`.

    Attributes:
        image_size: (H, W); divisible by ``2 ** (len(block_out_channels) - 1) * patch``.
        block_out_channels: widths of the AutoencoderKL blocks; ``n`` blocks downsample
            ``2 ** (n - 1)`` times (3 blocks -> 4x).
        layers_per_block: resnets per encoder block (the decoder uses one more, as diffusers does).
        latent_channels: channels of the VAE latent.
        patch: latent patch grouped into one token (paper: 2).
        norm_num_groups: GroupNorm groups in the VAE.
        mid_attention: self-attention in the VAE's middle block (off: cheaper, plenty at 16x16).
    """

    image_size: tuple[int, int] = (64, 64)
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    patch: int = 2
    norm_num_groups: int = 8
    mid_attention: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", as_pair(self.image_size, "image_size"))
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        check(len(self.block_out_channels) >= 1, "block_out_channels must not be empty")
        check(
            all(c > 0 and c % self.norm_num_groups == 0 for c in self.block_out_channels),
            f"block_out_channels {self.block_out_channels} must be multiples of norm_num_groups={self.norm_num_groups}",
        )
        check(self.latent_channels > 0, f"latent_channels must be > 0, got {self.latent_channels}")
        check(self.patch >= 1, f"patch must be >= 1, got {self.patch}")
        check(self.layers_per_block >= 1, f"layers_per_block must be >= 1, got {self.layers_per_block}")
        f = self.downsample * self.patch
        check(
            all(s % f == 0 for s in self.image_size),
            f"image_size {self.image_size} must be divisible by downsample*patch = {f}",
        )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


class VAETokenizer(Tokenizer):
    """Frames -> ``(h, w, latent_channels * patch^2)`` normalised latents (64x64 -> 8x8x16)."""

    type_name = "vae"
    kind = "continuous"
    config_class = VAEConfig

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__(config or VAEConfig())
        from diffusers import AutoencoderKL  # heavy import: only when a VAE is built

        cfg = self.config
        n = len(cfg.block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_num_groups,
            sample_size=cfg.image_size[0],
            mid_block_add_attention=cfg.mid_attention,
        )
        # Per-channel latent normalisation, measured after training (see set_latent_stats).
        self.register_buffer("latent_shift", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_scale", torch.ones(cfg.latent_channels))

    @property
    def grid(self) -> tuple[int, int]:
        f = self.config.downsample * self.config.patch
        return (self.config.image_size[0] // f, self.config.image_size[1] // f)

    @property
    def token_dim(self) -> int:
        return self.config.latent_channels * self.config.patch**2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: float ``(B, 3, H, W)`` in [-1, 1] -> (reconstruction, KL per sample)."""
        post = self.vae.encode(x).latent_dist
        z = post.sample()  # (B, c, H/f, W/f)
        recon = self.vae.decode(z).sample
        return recon, post.kl()

    @torch.no_grad()
    def set_latent_stats(self, frames: torch.Tensor) -> None:
        """Measure per-channel mean/std of posterior means on uint8 frames ``(B, H, W, 3)``."""
        z = torch.cat(
            [
                self.vae.encode(frames_to_float(frames[i : i + self.chunk_size].to(self.device))).latent_dist.mean
                for i in range(0, frames.shape[0], self.chunk_size)
            ]
        )  # (B, c, h', w')
        self.latent_shift.copy_(z.mean(dim=(0, 2, 3)))
        self.latent_scale.copy_(1.0 / z.std(dim=(0, 2, 3)).clamp_min(1e-6))

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        z = self.vae.encode(frames_to_float(frames)).latent_dist.mean  # (B, c, H/f, W/f)
        z = (z - self.latent_shift.view(1, -1, 1, 1)) * self.latent_scale.view(1, -1, 1, 1)
        p = self.config.patch
        return rearrange(z, "b c (h p) (w q) -> b h w (c p q)", p=p, q=p)  # (B, h, w, C)

    def _decode(self, tokens: torch.Tensor) -> torch.Tensor:
        p = self.config.patch
        z = rearrange(tokens, "b h w (c p q) -> b c (h p) (w q)", p=p, q=p)  # (B, c, H/f, W/f)
        z = z / self.latent_scale.view(1, -1, 1, 1) + self.latent_shift.view(1, -1, 1, 1)
        return float_to_frames(self.vae.decode(z).sample)  # (B, H, W, 3)
