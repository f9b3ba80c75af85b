"""Per-token diffusion head of the continuous variant (MAR's "diffusion loss", Li et al. 2024).

The trunk gives one vector ``z`` per image token; a small MLP with adaLN residual blocks,
conditioned on ``z`` and the diffusion time, predicts the noise of that token's latent.
Training: the usual epsilon-prediction MSE at a random time. Sampling: deterministic DDIM
(Song et al. 2021, eta = 0) with the predicted clean latent clipped at every step, as the
HMA paper does for its "soft token" model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (float or int) diffusion times, as in DiT / ADM. (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]  # (N, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def cosine_alphas_cumprod(steps: int, s: float = 0.008) -> torch.Tensor:
    """Cosine noise schedule (Nichol & Dhariwal 2021): alpha_bar(t) for t = 0..steps-1."""
    x = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()  # (steps,)


class AdaLNResBlock(nn.Module):
    """Residual MLP block whose LayerNorm is modulated by the condition (MAR's ResBlock)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)  # each (N, W)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DiffusionMLP(nn.Module):
    """Predicts the noise of one token latent from (x_t, t, z). All inputs are per token."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.width = width
        self.time_embed = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(token_dim, width)
        self.blocks = nn.ModuleList(AdaLNResBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, token_dim)

    def initialize_weights(self) -> None:
        # Zero the modulations and the output so the head starts by predicting zero noise.
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final_ada[-1].weight)
        nn.init.zeros_(self.final_ada[-1].bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # x_t (N, C), t (N,), z (N, D) -> eps (N, C)
        c = self.time_embed(timestep_embedding(t, 256).to(x_t.dtype)) + self.cond_embed(z)  # (N, W)
        h = self.input_proj(x_t)  # (N, W)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)  # (N, C)


class DiffusionHead(nn.Module):
    """The MLP plus its noise schedule: ``loss`` for training, ``sample`` (DDIM) for generation."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, train_steps: int, clip: float):
        super().__init__()
        self.token_dim = token_dim
        self.train_steps = train_steps
        self.clip = clip
        self.net = DiffusionMLP(token_dim, cond_dim, width, depth)
        # Rebuilt from the config, so not saved in checkpoints.
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(train_steps), persistent=False)

    def loss(self, x0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-token epsilon MSE at a uniformly random time. x0 (N, C), z (N, D) -> (N,)."""
        t = torch.randint(0, self.train_steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        a = self.alphas_cumprod[t].to(x0.dtype)[:, None]  # (N, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return (self.net(x_t, t, z) - noise).pow(2).mean(dim=-1)

    def sample(
        self,
        z: torch.Tensor,
        num_steps: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        net=None,
    ) -> torch.Tensor:
        """DDIM (eta = 0) from noise scaled by ``temperature``. z (N, D) -> x0 (N, C).

        ``net(x_t (N,C), t (N,) long, z (N,D)) -> eps (N,C)`` replaces ``self.net`` (an exported
        graph): the noise, schedule and clipping stay these. The step count is a Python int,
        so the loop unrolls to a fixed graph.
        """
        net = self.net if net is None else net
        n = z.shape[0]
        x = torch.randn(n, self.token_dim, generator=generator, device=z.device, dtype=z.dtype) * temperature
        ts = torch.linspace(self.train_steps - 1, 0, num_steps).round().long().tolist()
        for i, t in enumerate(ts):
            a = self.alphas_cumprod[t].to(z.dtype)
            a_prev = self.alphas_cumprod[ts[i + 1]].to(z.dtype) if i + 1 < len(ts) else torch.ones_like(a)
            eps = net(x, torch.full((n,), t, device=z.device), z)
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-self.clip, self.clip)  # per-step clipping
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()  # re-derived so the step stays consistent
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x
