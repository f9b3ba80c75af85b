"""HMA: Heterogeneous Masked Autoregression over video and action tokens (arXiv 2502.04296).

Reads top to bottom like DiT's ``models.py``: helpers, embedders, the spatio-temporal
block, the model (``__init__``, ``initialize_weights``, ``forward``, sampling).

Shape names: B batch, T frames, S tokens per frame (image tokens, then action tokens when
concatenated), D width, H heads, E embodiments, A step-action width (callers pass their
batch's widest robot's; the public methods zero-pad to max_step_dim), K action tokens,
P cached frames, C continuous token channels, L layers.

Alignment (docs/architecture.md): callers pass ``frames[t]`` and ``actions[t]`` aligned by
index, ``actions[t]`` being the action executed from frame t to t+1. Inside, frame t is
conditioned on ``prev_actions[t] = actions[t-1]``; the first frame of a window gets a
learned "no action" embedding, and an action containing NaN is "unknown" (learned
"masked action" embedding: passive video, policy and full-dynamics settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import SETTINGS, HMAConfig
from .diffusion import DiffusionHead

ORDERS = ("random", "confidence")

# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021) on the last axis, exact at any frame index.

    Attention scores then depend only on position differences, so a sliding temporal window
    can run past the training length without new position parameters. A long-running cache
    has large absolute indices (10^6 frames = 6 days at 2 Hz), where ``pos * freq`` in float32
    loses the angle entirely, and TensorRT has no float64. So the angle is never formed: the
    index is split into base-256 digits, and the rotation is the product of one rotation per
    digit, looked up in tables of cos/sin(d * 256^j * freq mod 2 pi) made once in float64.
    Indices below 256 read a single table entry (the same numbers as the float64 formula);
    larger ones add ~1 float32 ulp per digit place. Indices wrap at 256^4 = 2^32 frames
    (68 years at 2 Hz). Buffers are rebuilt from the head width, never saved.
    """

    RADIX, PLACES = 256, 4

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        half = head_dim // 2
        freqs = base ** (-torch.arange(half, dtype=torch.float64) / half)  # (half,)
        place = float(self.RADIX) ** torch.arange(self.PLACES, dtype=torch.float64)  # (PLACES,)
        scale = place[:, None] * torch.arange(self.RADIX, dtype=torch.float64)  # (PLACES, RADIX): d * 256^j
        ang = torch.remainder(scale[..., None] * freqs, 2 * math.pi).reshape(-1, half)  # (PLACES * RADIX, half)
        self.register_buffer("cos_table", ang.cos().float(), persistent=False)
        self.register_buffer("sin_table", ang.sin().float(), persistent=False)
        powers = self.RADIX ** torch.arange(self.PLACES, dtype=torch.long)
        self.register_buffer("powers", powers, persistent=False)  # (PLACES,)
        self.register_buffer("rows", self.RADIX * torch.arange(self.PLACES), persistent=False)  # (PLACES,)

    def tables(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos (T,) long, >= 0 -> cos, sin (T, hd) float32 for ``rotate``: made once per trunk
        pass and shared by every block's queries and keys. ``sin`` carries the rotation's
        signs, (-sin, sin), so that ``rotate`` is two products and a sum. A cached step is
        bound by its op count, hence four base-256 digit places rather than eight base-16."""
        q = torch.div(pos[:, None], self.powers, rounding_mode="floor")  # (T, PLACES)
        digits = q - self.RADIX * torch.div(q, self.RADIX, rounding_mode="floor")  # (T, PLACES)
        idx = digits + self.rows  # rows of the tables
        cos_j, sin_j = self.cos_table[idx].unbind(1), self.sin_table[idx].unbind(1)  # PLACES x (T, half)
        cos, sin = cos_j[0], sin_j[0]
        for j in range(1, self.PLACES):  # angle sum: rotate by each digit's angle in turn
            cos, sin = cos * cos_j[j] - sin * sin_j[j], sin * cos_j[j] + cos * sin_j[j]
        return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (..., T, hd) rotated by the angles of ``tables`` (cos, sin (T, hd), same dtype as x):
        halves (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), as x cos + swap(x) sin."""
        return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (..., T, hd), pos (T,) long, >= 0."""
        return self.rotate(x, *(t.to(x.dtype) for t in self.tables(pos)))


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` with a plain fallback. q (N,H,Tq,hd), mask bool (Tq,Tk)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))
    att = F.dropout(att.softmax(dim=-1), dropout_p)
    return att @ v


def cached_attention(q, k, v, past_k, past_v, bias: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Causal attention of T new frames over [cached frames, themselves].

    q, k, v (N,H,T,hd); past_k, past_v (N,H,P,hd); bias (T, P+T) additive, 0 where a new frame
    may attend and -inf elsewhere (``temporal_bias``) -> (N,H,T,hd). Plain batched products,
    not ``F.scaled_dot_product_attention``: with a mask and a few queries per sequence (T = 1
    or 2, P + T = 12 keys, thousands of sequences) SDPA's CPU kernel was 2-4x slower (hma_small
    and hma_base, 2 threads); ``baddbmm`` scales and masks the scores in the same op.
    """
    N, H, T, hd = q.shape
    keys = torch.cat([past_k, k], dim=-2).view(N * H, -1, hd)  # (NH, P+T, hd)
    values = torch.cat([past_v, v], dim=-2).view(N * H, -1, hd)
    scores = torch.baddbmm(bias, q.reshape(N * H, T, hd), keys.transpose(1, 2), alpha=hd**-0.5)
    w = scores.softmax(dim=-1)  # (NH, T, P+T)
    if dropout_p > 0:  # training only: an exported graph has no dropout node
        w = F.dropout(w, dropout_p)
    return torch.bmm(w, values).view(N, H, T, hd)


def temporal_bias(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool (T, K) "may attend" -> additive attention bias: 0 there, -inf elsewhere."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible, float("-inf"))


def temporal_mask(valid: torch.Tensor, t: int) -> torch.Tensor:
    """Who a new frame may attend to: visible cached frames and itself / earlier new frames.

    valid: (P,) cached slots every new frame sees, or (T, P) per new frame. Returns (T, P+T).
    """
    causal = torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
    past = valid if valid.dim() == 2 else valid[None].expand(t, -1)
    return torch.cat([past, causal], dim=1)


def per_embodiment(modules: list[nn.Module], x: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Each sample of x (B,T,...) through its own embodiment's module; sel (E,B) bool.

    Every module runs on the whole batch and each sample keeps its own output (a static loop,
    no data-dependent shapes: mixed batches and the exported step share it). A single-robot
    model (the runtime's) runs its one module and selects nothing.
    """
    if len(modules) == 1:
        return modules[0](x)
    out = None
    for i, module in enumerate(modules):
        y = module(x)
        out = torch.where(sel[i][:, None, None], y, torch.zeros_like(y) if out is None else out)
    return out


def factor_digits(ids: torch.Tensor, factors: tuple[int, ...]) -> list[torch.Tensor]:
    """Token id -> one digit per vocabulary factor, most significant first (2^18 = 512 x 512)."""
    digits = []
    for f in reversed(factors):
        digits.append(ids % f)
        ids = torch.div(ids, f, rounding_mode="floor")
    return digits[::-1]


def compose_digits(digits: list[torch.Tensor], factors: tuple[int, ...]) -> torch.Tensor:
    ids = torch.zeros_like(digits[0])
    for d, f in zip(digits, factors, strict=True):
        ids = ids * f + d
    return ids


def gumbel_sample(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None, with_prob: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sample ids from softmax(logits / temperature) by Gumbel-max; returns (ids, their
    probability, or None without ``with_prob``: only confidence-ordered decoding reads it).

    Temperature really scales the logits (the reference implementation ignores it);
    temperature 0 is greedy.
    """
    if temperature > 0:
        if temperature != 1:
            logits = logits / temperature
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        ids = (logits - torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))).argmax(dim=-1)
    else:
        ids = logits.argmax(dim=-1)
    if not with_prob:
        return ids, None
    prob = logits.softmax(dim=-1).gather(-1, ids[..., None])[..., 0]
    return ids, prob


def unmask_schedule(num_tokens: int, num_steps: int) -> list[int]:
    """Tokens still masked after each of M steps: cosine schedule as in MaskGIT (Chang et al. 2022).

    At least one token is revealed per step and none remain after the last.
    """
    remaining, prev = [], num_tokens
    for k in range(num_steps):
        n = int(math.floor(num_tokens * math.cos(math.pi / 2 * (k + 1) / num_steps)))
        n = max(0, min(n, prev - 1)) if k + 1 < num_steps else 0
        remaining.append(n)
        prev = n
    return remaining


def patchify_latents(latents: torch.Tensor, patch: int) -> torch.Tensor:
    """VAE latents (..., H, W, c) -> continuous tokens (..., H/p, W/p, c*p*p) (paper: 8x VAE, patch 2)."""
    if latents.shape[-3] % patch or latents.shape[-2] % patch:
        raise ValueError(f"latent grid {tuple(latents.shape[-3:-1])} is not divisible by patch {patch}")
    return rearrange(latents, "... (h p) (w q) c -> ... h w (p q c)", p=patch, q=patch)


def unpatchify_latents(tokens: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of ``patchify_latents``: (..., h, w, c*p*p) -> (..., h*p, w*p, c)."""
    return rearrange(tokens, "... h w (p q c) -> ... (h p) (w q) c", p=patch, q=patch)


@dataclass
class KVCache:
    """Temporal keys/values of committed frames, as plain tensors (exportable).

    ``k``/``v``: (L, B, S, H, P, hd), P = max_frames - 1 slots, newest last; keys carry the
    rotary embedding of their absolute frame index, so a new frame costs one frame of
    rotary work and a slide keeps relative positions exact. ``valid``: (P,) bool, True for
    filled slots (always the newest, right-aligned). ``pos``: () long, the absolute index
    of the next frame (frames committed so far).
    """

    k: torch.Tensor
    v: torch.Tensor
    valid: torch.Tensor
    pos: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def num_frames(self) -> int:
        return int(self.valid.sum())

    def expand(self, batch_size: int) -> KVCache:
        """Share a batch-1 cache between ``batch_size`` candidates (no copy)."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"can only expand a batch-1 cache, this one has batch {self.batch_size}")
        shape = (-1, batch_size, -1, -1, -1, -1)
        return KVCache(self.k.expand(*shape), self.v.expand(*shape), self.valid, self.pos)

    def push(self, k_new: torch.Tensor, v_new: torch.Tensor) -> KVCache:
        """Append T new frames' keys/values (L, B, S, H, T, hd), dropping the oldest when full."""
        P, T = self.valid.shape[0], k_new.shape[-2]
        if T > P:
            raise ValueError(f"can push at most {P} frames into a {P}-slot cache, got {T}")
        # The oldest T slots go; slicing before the copy writes the P kept slots once.
        k = torch.cat([self.k[..., T:, :].expand(-1, k_new.shape[1], -1, -1, -1, -1), k_new], dim=-2)
        v = torch.cat([self.v[..., T:, :].expand(-1, v_new.shape[1], -1, -1, -1, -1), v_new], dim=-2)
        ones = torch.ones(T, dtype=torch.bool, device=self.valid.device)
        return KVCache(k, v, torch.cat([self.valid[T:], ones]), self.pos + T)


@dataclass
class Generation:
    """Output of ``HMA.generate``.

    frames: (N, H, h, w) token ids or (N, H, h, w, C) latents.
    actions: (N, H, A) raw step actions read by the action head at each generated frame:
        its estimate of the action that produced that frame (the given action where one
        was given, a policy estimate where it was NaN/unknown).
    """

    frames: torch.Tensor
    actions: torch.Tensor


# ---------------------------------------------------------------------------------------
# Embedders and heads
# ---------------------------------------------------------------------------------------


class ActionStem(nn.Module):
    """One embodiment's action encoder: z-score with its stats, then an MLP over a 2 Hz step."""

    def __init__(self, spec, dim: int):
        super().__init__()
        self.step_dim = spec.step_action_dim
        # Stats tile over the `stride` raw actions of one step; rebuilt from the config.
        mean = torch.tensor(spec.action_mean, dtype=torch.float32).repeat(spec.stride)
        std = torch.tensor(spec.action_std, dtype=torch.float32).repeat(spec.stride)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(self.step_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def normalize(self, a: torch.Tensor) -> torch.Tensor:
        return (a[..., : self.step_dim] - self.mean) / self.std

    def denormalize(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.std + self.mean

    def forward(self, a: torch.Tensor) -> torch.Tensor:  # (..., >= step_dim) raw -> (..., D)
        return self.mlp(self.normalize(a))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMS norm from plain ops (``nn.RMSNorm`` has no ONNX symbolic below opset 23)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    """Holds the learned gain of ``rms_norm`` (``Attention`` applies q's and k's together)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    """Multi-head self-attention along one axis of (B, T, S, D) tokens, optional QK RMS-norm.

    Spatial: the S tokens of each frame attend to each other (bidirectional). Temporal: each
    token position attends causally over the T frames, with rotary angles, after the cached
    frames' keys/values when given. Heads are split and merged by strided views around the
    projections (no transposed copy of the input), queries and keys are normalised and
    rotated as one stacked tensor: a cached step is small, and its cost is the op count.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, dropout: float, temporal: bool):
        super().__init__()
        self.num_heads = num_heads
        self.is_temporal = temporal
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = RMSNorm(head_dim) if qk_norm else None
        self.k_norm = RMSNorm(head_dim) if qk_norm else None
        self.dropout = dropout
        # Attention runs over the last-but-one axis: frames (temporal) or tokens (spatial).
        self.split = "b t s (three h d) -> three (b s) h t d" if temporal else "b t s (three h d) -> three (b t) h s d"
        self.merge = "(b s) h t d -> b t s (h d)" if temporal else "(b t) h s d -> b t s (h d)"

    def forward(
        self,
        x: torch.Tensor,
        past_k: torch.Tensor | None = None,
        past_v: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B,T,S,D). Temporal: rotary angles ``rope`` = ``Rotary.tables(past_pos + t)`` (past
        keys already carry theirs); past_k, past_v ((B S),H,P,hd) or None; ``bias`` the additive
        (T, P+T) or (T, T) mask of ``temporal_bias``, made once per trunk pass.
        Returns out (B,T,S,D) and k, v: ((B S),H,T,hd) temporal (k rotated: what a cache
        stores), ((B T),H,S,hd) spatial."""
        qkv = rearrange(self.qkv(x), self.split, three=3, h=self.num_heads)  # (3, B*S or B*T, H, L, hd)
        qk, v = qkv[:2], qkv[2]
        if self.q_norm is not None:
            w = torch.stack([self.q_norm.weight, self.k_norm.weight]).view(2, 1, 1, 1, -1)
            qk = rms_norm(qk, w, self.q_norm.eps)
        if self.is_temporal:
            qk = Rotary.rotate(qk, *rope)
        q, k = qk[0], qk[1]
        p = self.dropout if self.training else 0.0
        if not self.is_temporal:
            out = attention(q, k, v, None, p)
        elif past_k is None:
            out = attention(q, k, v, bias, p)
        else:
            out = cached_attention(q, k, v, past_k, past_v, bias, p)
        B = x.shape[0]
        return self.proj(rearrange(out, self.merge, b=B)), k, v


class CrossAttention(nn.Module):
    """Image tokens attend to the action tokens of their own frame (paper's ablation variant)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:  # (N,S,D), (N,K,D)
        q = rearrange(self.q(x), "n s (h d) -> n h s d", h=self.num_heads)
        k, v = rearrange(self.kv(mem), "n k (two h d) -> two n h k d", two=2, h=self.num_heads)
        return self.proj(rearrange(attention(q, k, v, None, 0.0), "n h s d -> n s (h d)"))


# ---------------------------------------------------------------------------------------
# The spatio-temporal block
# ---------------------------------------------------------------------------------------


class HMABlock(nn.Module):
    """Pre-norm block: spatial attention (within a frame), [cross-attention to action tokens],
    causal temporal attention (per token position, across frames), MLP.

    With modulation, each embodiment has its own adaLN map from the action embedding to a
    shift, scale and gate per sub-layer; gates are ``1 + g`` and every map is zero-initialised,
    so a new embodiment starts as the identity on a pretrained trunk.
    """

    def __init__(self, config: HMAConfig):
        super().__init__()
        D = config.dim
        self.norm1 = nn.LayerNorm(D)
        self.spatial = Attention(D, config.num_heads, config.qk_norm, config.dropout, temporal=False)
        self.cross = None
        if config.action_conditioning == "cross_attention":
            self.norm_cross = nn.LayerNorm(D)
            self.cross = CrossAttention(D, config.num_heads)
        self.norm2 = nn.LayerNorm(D)
        self.temporal = Attention(D, config.num_heads, config.qk_norm, config.dropout, temporal=True)
        self.norm3 = nn.LayerNorm(D)
        hidden = int(D * config.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(D, hidden), nn.GELU(approximate="tanh"), nn.Dropout(config.dropout), nn.Linear(hidden, D)
        )
        self.modulation = None
        if config.action_conditioning.startswith("modulation"):
            self.modulation = nn.ModuleDict(
                {e.name: nn.Sequential(nn.SiLU(), nn.Linear(D, 9 * D)) for e in config.embodiments}
            )
            # (shift, scale, gate) x 3 sub-layers; scales and gates act as 1 + s, 1 + g: add once.
            one = torch.tensor([0.0, 1.0, 1.0] * 3).repeat_interleave(D)
            self.register_buffer("mod_offset", one, persistent=False)

    def _modulation(self, cond: torch.Tensor, sel: torch.Tensor) -> list[torch.Tensor | None]:
        """Each sample through its own embodiment's map: shift, 1 + scale, 1 + gate for each of
        the 3 sub-layers, 9 x (B,T,1,D). cond (B,T,D), sel (E,B) bool."""
        if self.modulation is None:
            return [None] * 9
        out = per_embodiment(list(self.modulation.values()), cond, sel)  # (B, T, 9D)
        return list((out + self.mod_offset)[:, :, None].chunk(9, dim=-1))

    @staticmethod
    def _modulate(h, shift, scale):
        return h if shift is None else torch.addcmul(shift, h, scale)  # h * (1 + s) + shift

    @staticmethod
    def _residual(x, out, gate):
        return x + out if gate is None else torch.addcmul(x, out, gate)  # x + (1 + g) * out

    def forward(self, x, cond, sel, act_mem, past_k, past_v, bias, rope):
        """x (B,T,S,D); cond (B,T,D); act_mem (B,T,K,D) or None; past_k, past_v ((B S),H,P,hd) or
        None; bias the additive temporal mask (``temporal_bias``); rope the temporal rotary angles
        of the T frames (``Rotary.tables``).
        Returns x and this call's temporal k, v (B,S,H,T,hd)."""
        B = x.shape[0]
        sh1, sc1, g1, sh2, sc2, g2, sh3, sc3, g3 = self._modulation(cond, sel)
        x = self._residual(x, self.spatial(self._modulate(self.norm1(x), sh1, sc1))[0], g1)  # (B, T, S, D)
        if self.cross is not None:
            mem = rearrange(act_mem, "b t k d -> (b t) k d")
            out = self.cross(rearrange(self.norm_cross(x), "b t s d -> (b t) s d"), mem)
            x = x + rearrange(out, "(b t) s d -> b t s d", b=B)
        out, k, v = self.temporal(self._modulate(self.norm2(x), sh2, sc2), past_k, past_v, bias, rope)
        x = self._residual(x, out, g2)
        x = self._residual(x, self.mlp(self._modulate(self.norm3(x), sh3, sc3)), g3)
        split = "(b s) h t d -> b s h t d"
        return x, rearrange(k, split, b=B), rearrange(v, split, b=B)


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


class HMA(nn.Module):
    """The HMA world model. See the module docstring and docs/architecture.md for the contract."""

    def __init__(self, config: HMAConfig):
        super().__init__()
        self.config = c = config
        D = c.dim
        self.num_image_tokens = c.num_image_tokens
        self.concat = c.action_conditioning in ("modulation+concat", "concat")
        self.num_action_tokens = c.num_action_tokens if self.concat else 0
        self.tokens_per_frame = self.num_image_tokens + self.num_action_tokens
        self.max_step_dim = max(e.step_action_dim for e in c.embodiments)

        # Image token embedders. Discrete: one table per vocabulary factor, summed.
        if c.variant == "discrete":
            self.token_embed = nn.ModuleList(nn.Embedding(f, D) for f in c.vocab_factors)
            self.token_head = nn.ModuleList(nn.Linear(D, f) for f in c.vocab_factors)
        else:
            self.token_embed = nn.Linear(c.token_dim, D)
            self.diffusion = DiffusionHead(c.token_dim, D, c.diff_dim, c.diff_depth, c.diff_train_steps, c.diff_clip)
        self.mask_token = nn.Parameter(torch.zeros(D))
        self.spatial_pos = nn.Parameter(torch.zeros(self.num_image_tokens, D))
        uses_action_tokens = self.concat or c.action_conditioning == "cross_attention"
        self.action_pos = nn.Parameter(torch.zeros(c.num_action_tokens, D)) if uses_action_tokens else None
        self.no_action = nn.Parameter(torch.zeros(D))  # condition of a window's first frame
        self.masked_action = nn.Parameter(torch.zeros(D))  # condition where the action is unknown

        # Per-embodiment modules (embodiments are data: built from the config's list).
        self.stems = nn.ModuleDict({e.name: ActionStem(e, D) for e in c.embodiments})
        self.action_heads = nn.ModuleDict({e.name: nn.Linear(D, e.step_action_dim) for e in c.embodiments})

        self.blocks = nn.ModuleList(HMABlock(c) for _ in range(c.depth))
        self.rotary = Rotary(D // c.num_heads)  # temporal positions of every block; no parameters
        self.final_norm = nn.LayerNorm(D)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def _basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

        self.apply(_basic)
        for p in (self.mask_token, self.spatial_pos, self.no_action, self.masked_action, self.action_pos):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        # Conditioning starts as the identity and outputs start neutral (adaLN-Zero, DiT).
        zero = list(self.action_heads.values())
        zero += list(self.token_head) if self.config.variant == "discrete" else []
        for block in self.blocks:
            if block.modulation is not None:
                zero += [m[-1] for m in block.modulation.values()]
        for m in zero:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        if self.config.variant == "continuous":
            self.diffusion.net.initialize_weights()

    # --- building blocks shared by training, re-forward, the cache and the exported step ---

    def _selection(self, emb: torch.Tensor) -> torch.Tensor:
        """(B,) embodiment indices -> (E, B) bool: which samples each embodiment's modules serve."""
        return emb[None] == torch.arange(len(self.config.embodiments), device=emb.device)[:, None]

    def _action_cond(self, prev_actions: torch.Tensor, is_first: torch.Tensor, sel: torch.Tensor):
        """Frame conditions (B,T,D) from the actions that produced each frame (B,T,A), NaN = unknown,
        each sample through its own embodiment's stem (``per_embodiment``)."""
        # isfinite / nan_to_num export through float64 casts (TorchScript exporter), which
        # TensorRT rejects; |a| < inf is the same test in the input's own dtype.
        finite = prev_actions.abs() < float("inf")  # (B, T, A), False for NaN and +-inf
        known = finite.all(dim=-1, keepdim=True)  # (B, T, 1)
        a = torch.where(finite, prev_actions, 0.0)
        cond = per_embodiment(list(self.stems.values()), a.to(self.no_action.dtype), sel)  # (B, T, D)
        cond = torch.where(known, cond, self.masked_action)
        return torch.where(is_first[..., None], self.no_action, cond)  # (B, T, D)

    def _embed_tokens(self, inputs: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(B,T,S) ids or (B,T,S,C) latents, masked positions replaced by the mask token -> (B,T,S,D)."""
        if self.config.variant == "discrete":
            ids = torch.where(token_mask, 0, inputs)
            digits = factor_digits(ids, self.config.vocab_factors)
            x = sum(emb(d) for emb, d in zip(self.token_embed, digits, strict=True))
        else:
            x = self.token_embed(inputs.to(self.mask_token.dtype))
        x = torch.where(token_mask[..., None], self.mask_token, x)
        return x + self.spatial_pos  # (B, T, S, D)

    def _forward_frames(
        self, inputs, token_mask, prev_actions, is_first, emb, past: KVCache | None = None, past_visible=None
    ):
        """The trunk on T frames, after ``past`` committed frames (or none).

        inputs (B,T,S[,C]); token_mask (B,T,S) bool; prev_actions (B,T,A) raw, NaN = unknown;
        is_first (B,T) or (T,) bool; emb (B,) long; past_visible (T,P) bool overrides which
        cached slots each frame sees (default: the valid ones). Returns hidden image tokens (B,T,S,D),
        action read-out (B,T,D), and this call's temporal keys/values (L,B,S,H,T,hd).
        """
        B, T = inputs.shape[:2]
        sel = self._selection(emb)  # (E, B)
        cond = self._action_cond(prev_actions, is_first.expand(B, T), sel)  # (B, T, D)
        x = self._embed_tokens(inputs, token_mask)  # (B, T, S_img, D)
        if self.config.action_conditioning == "add":
            x = x + cond[:, :, None]
        act_mem = None
        if self.action_pos is not None:
            act_mem = cond[:, :, None] + self.action_pos  # (B, T, K, D): repeated action tokens + position
        if self.concat:
            x = torch.cat([x, act_mem], dim=2)  # (B, T, S_img + K, D)
        pos = torch.arange(T, device=inputs.device)  # absolute frame indices of the T frames
        if past is not None:
            pos = pos + past.pos
        # Rotary angles and the temporal mask: made once per pass, shared by every block.
        rope = [t.to(x.dtype) for t in self.rotary.tables(pos)]
        if past is None:
            visible = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # causal
        else:
            visible = temporal_mask(past.valid if past_visible is None else past_visible, T)  # (T, P+T)
        bias = temporal_bias(visible, x.dtype)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            pk = pv = None
            if past is not None:
                pk = rearrange(past.k[i], "b s h p d -> (b s) h p d")
                pv = rearrange(past.v[i], "b s h p d -> (b s) h p d")
            x, k, v = block(x, cond, sel, act_mem, pk, pv, bias, rope)
            ks.append(k)
            vs.append(v)
        x = self.final_norm(x)  # (B, T, S, D)
        img = x[:, :, : self.num_image_tokens]
        # Action read-out: the action tokens when concatenated, else the image tokens.
        readout = (x[:, :, self.num_image_tokens :] if self.concat else img).mean(dim=2)  # (B, T, D)
        return img, readout, torch.stack(ks), torch.stack(vs)

    def _actions_out(self, readout: torch.Tensor, sel: torch.Tensor, raw: bool):
        """Action heads: (B,T,D) -> (B,T,max_step_dim), normalised or raw, zero-padded."""
        out = readout.new_zeros(*readout.shape[:2], self.max_step_dim)
        for i, (name, head) in enumerate(self.action_heads.items()):
            a = head(readout)  # (B, T, d_e)
            if raw:
                a = self.stems[name].denormalize(a)
            a = F.pad(a, (0, self.max_step_dim - a.shape[-1]))
            out = torch.where(sel[i][:, None, None], a, out)
        return out

    def _token_logits(self, h: torch.Tensor) -> list[torch.Tensor]:
        return [head(h) for head in self.token_head]  # per factor (..., f_i)

    def _heads(self, h: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        """What the sampler reads: logits per factor (discrete) or the hidden tokens (continuous)."""
        return self._token_logits(h) if self.config.variant == "discrete" else h

    # --- validation of public inputs ---

    def _check_frames(self, x: torch.Tensor, name: str, with_time: bool = True) -> None:
        c = self.config
        lead = 2 if with_time else 1
        if c.variant == "discrete":
            want = f"(B,{' T,' if with_time else ''} {c.tokens_h}, {c.tokens_w}) long token ids"
            ok = x.dim() == lead + 2 and tuple(x.shape[lead:]) == (c.tokens_h, c.tokens_w)
            ok = ok and not torch.is_floating_point(x)
            if not ok:
                raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)} dtype {x.dtype}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= c.vocab_size):
                raise ValueError(
                    f"{name} has token ids in [{int(x.min())}, {int(x.max())}], vocabulary is [0, {c.vocab_size})"
                )
        else:
            want = f"(B,{' T,' if with_time else ''} {c.tokens_h}, {c.tokens_w}, {c.token_dim}) float latents"
            shape = (c.tokens_h, c.tokens_w, c.token_dim)
            ok = x.dim() == lead + 3 and tuple(x.shape[lead:]) == shape and torch.is_floating_point(x)
            if not ok:
                raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)} dtype {x.dtype}")
            if not torch.isfinite(x).all():
                raise ValueError(f"{name} contains NaN or inf")

    def _check_actions(self, a: torch.Tensor, name: str, min_width: int, allow_nan: bool) -> None:
        if not torch.is_floating_point(a) or a.dim() != 3:
            raise ValueError(f"{name} must be a (B, T, A) float tensor, got shape {tuple(a.shape)} {a.dtype}")
        if a.shape[-1] < min_width:
            raise ValueError(
                f"{name} has width A={a.shape[-1]}, the embodiment needs step_action_dim={min_width} "
                "(action_dim * stride raw actions per 2 Hz step)"
            )
        bad = torch.isinf(a) if allow_nan else ~torch.isfinite(a)
        if bad.any():
            raise ValueError(f"{name} contains {'inf' if allow_nan else 'NaN or inf'}")

    def _embodiment_index(self, embodiment: str | int) -> int:
        if isinstance(embodiment, str):
            return self.config.embodiment_index(embodiment)
        if not 0 <= int(embodiment) < len(self.config.embodiments):
            raise ValueError(f"embodiment index {embodiment} out of range for {self.config.embodiment_names}")
        return int(embodiment)

    # --- training ---

    def make_masks(self, batch_size: int, num_frames: int, setting: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Training masks: (token_mask (B,T,S), action_unknown (B,T)) for one setting.

        Prompt frames are never masked. Future frames: a per-sample ratio from the cosine
        schedule r = cos(pi/2 u), u ~ U(0,1) (MaskGIT), floored at ``min_mask_ratio``, the same
        number of tokens masked in every future frame (inference unmasks frame by frame).
        """
        c = self.config
        B, T, S = batch_size, num_frames, self.num_image_tokens
        P = min(c.num_prompt_frames, T - 1)
        future = (torch.arange(T, device=device) >= P)[None, :].expand(B, T)  # (B, T)
        ratio = torch.cos(math.pi / 2 * torch.rand(B, device=device)).clamp(min=c.min_mask_ratio)  # (B,)
        n_masked = (ratio * S).ceil().clamp(1, S)  # (B,)
        rank = torch.rand(B, T, S, device=device).argsort(dim=-1).argsort(dim=-1)  # (B, T, S)
        token_mask = (rank < n_masked[:, None, None]) & future[..., None]
        if setting == "policy":  # future video unseen: predict actions from the past only
            token_mask = future[..., None].expand(B, T, S).clone()
        action_unknown = torch.zeros(B, T, dtype=torch.bool, device=device)
        if setting in ("full", "policy"):
            action_unknown = future.clone()  # the actions producing future frames are predicted
        elif setting == "video":
            action_unknown = torch.ones(B, T, dtype=torch.bool, device=device)  # actions dropped
        return token_mask, action_unknown

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Masked-token training loss. See docs/architecture.md for the batch contract."""
        c = self.config
        setting = batch.get("setting", "forward_dynamics")
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
        key = "tokens" if c.variant == "discrete" else "latents"
        if key not in batch:
            raise ValueError(f"the {c.variant} variant needs batch[{key!r}], got keys {sorted(batch)}")
        frames = batch[key]
        self._check_frames(frames, key)
        B, T = frames.shape[:2]
        if not 2 <= T <= c.max_frames:
            raise ValueError(f"{key} has T={T} frames, must be in [2, max_frames={c.max_frames}]")
        emb = batch["embodiment"]
        if emb.shape != (B,) or torch.is_floating_point(emb):
            raise ValueError(f"embodiment must be a (B,)=({B},) long tensor, got {tuple(emb.shape)} {emb.dtype}")
        if int(emb.min()) < 0 or int(emb.max()) >= len(c.embodiments):
            raise ValueError(f"embodiment indices must be in [0, {len(c.embodiments)}), got {emb.tolist()}")
        actions = batch["actions"]
        self._check_actions(actions, "actions", self._need_width(emb), allow_nan=False)
        if actions.shape[:2] != (B, T):
            raise ValueError(f"actions must be (B, T, A) = ({B}, {T}, A), got {tuple(actions.shape)}")
        actions = self._pad_actions(actions)  # (B, T, max(A, max_step_dim))

        device = frames.device
        inputs = frames.flatten(2, 3)  # (B, T, S[, C])
        token_mask, action_unknown = self.make_masks(B, T, setting, device)
        prev = torch.cat([actions.new_zeros(B, 1, actions.shape[-1]), actions[:, :-1]], dim=1)  # (B, T, A)
        prev = torch.where(action_unknown[..., None], float("nan"), prev)
        is_first = torch.arange(T, device=device) == 0  # (T,)
        h, readout, _, _ = self._forward_frames(inputs, token_mask, prev, is_first, emb)

        metrics: dict = {"mask_ratio": token_mask.float().mean().detach()}
        loss = h.new_zeros(())
        if setting != "policy":
            hm = h[token_mask]  # (M, D) hidden states of masked tokens
            if c.variant == "discrete":
                targets = factor_digits(inputs[token_mask], c.vocab_factors)
                logits = self._token_logits(hm)
                video_loss = sum(F.cross_entropy(lg, t) for lg, t in zip(logits, targets, strict=True))
                correct = torch.stack([lg.argmax(-1) == t for lg, t in zip(logits, targets, strict=True)])
                metrics["accuracy"] = correct.all(dim=0).float().mean().detach()
            else:
                video_loss = self.diffusion.loss(inputs[token_mask].to(hm.dtype), hm).mean()
            loss = loss + video_loss
            metrics["video_loss"] = video_loss.detach()
        if setting in ("full", "policy"):
            sel = self._selection(emb)
            pred = self._actions_out(readout, sel, raw=False)  # (B, T, max_step_dim)
            # Targets: the true (un-masked) actions that produced each frame, normalised per sample.
            true_prev = torch.cat([actions.new_zeros(B, 1, actions.shape[-1]), actions[:, :-1]], dim=1)
            target = torch.zeros_like(pred)
            dims = torch.zeros_like(pred, dtype=torch.bool)
            width = torch.arange(self.max_step_dim, device=device)
            for i, stem in enumerate(self.stems.values()):
                norm = F.pad(stem.normalize(true_prev), (0, self.max_step_dim - stem.step_dim))
                target = torch.where(sel[i][:, None, None], norm, target)
                dims |= sel[i][:, None, None] & (width < stem.step_dim)
            dims &= action_unknown[..., None] & ~is_first[None, :, None]  # (B, T, max_step_dim)
            action_loss = (pred - target).pow(2)[dims].mean()
            loss = loss + action_loss
            metrics["action_loss"] = action_loss.detach()
        metrics["loss"] = loss.detach()
        return loss, metrics

    # --- inference: the temporal KV cache and frame-by-frame generation ---

    def outputs(self, frames, prev_actions, embodiment, token_mask=None) -> dict:
        """All per-frame outputs of one causal pass (tests, evaluation). frames (B,T,h,w[,C]);
        prev_actions (B,T,A): the action that produced each frame (row 0 ignored, NaN = unknown);
        returns ``hidden`` (B,T,S,D), ``logits`` per factor (discrete), ``actions`` (B,T,max_step_dim) raw."""
        B, T = frames.shape[:2]
        inputs = frames.flatten(2, 3)
        if token_mask is None:
            token_mask = torch.zeros(B, T, self.num_image_tokens, dtype=torch.bool, device=frames.device)
        emb = self._embodiment_tensor(embodiment, B, frames.device)
        self._check_actions(prev_actions, "prev_actions", self._need_width(emb), allow_nan=True)
        is_first = torch.arange(T, device=frames.device) == 0
        h, readout, _, _ = self._forward_frames(inputs, token_mask, self._pad_actions(prev_actions), is_first, emb)
        out = {"hidden": h, "actions": self._actions_out(readout, self._selection(emb), raw=True)}
        if self.config.variant == "discrete":
            out["logits"] = self._token_logits(h)
        return out

    def _embodiment_tensor(self, embodiment, batch_size: int, device) -> torch.Tensor:
        if isinstance(embodiment, torch.Tensor):
            return embodiment.to(device)
        return torch.full((batch_size,), self._embodiment_index(embodiment), dtype=torch.long, device=device)

    def _need_width(self, emb: torch.Tensor) -> int:
        """Step-action width the batch's widest embodiment reads. emb (B,) long."""
        return max((self.config.embodiments[i].step_action_dim for i in emb.unique().tolist()), default=1)

    def _pad_actions(self, a: torch.Tensor) -> torch.Tensor:
        """(..., A) -> (..., max(A, max_step_dim)): zeros on the right. Every stem reads the whole
        batch (one static loop serves mixed batches and the export), so a batch of a narrow
        robot must still be as wide as the widest one; NaN (unknown) rows stay unknown."""
        return F.pad(a, (0, max(0, self.max_step_dim - a.shape[-1])))

    def init_cache(self, batch_size: int = 1, device=None, dtype=None) -> KVCache:
        """An empty temporal cache with ``max_frames - 1`` slots per layer."""
        c = self.config
        device = device if device is not None else self.mask_token.device
        dtype = dtype if dtype is not None else self.mask_token.dtype
        shape = (c.depth, batch_size, self.tokens_per_frame, c.num_heads, c.max_frames - 1, c.dim // c.num_heads)
        return KVCache(
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(c.max_frames - 1, dtype=torch.bool, device=device),
            torch.zeros((), dtype=torch.long, device=device),
        )

    def step(self, inputs, token_mask, prev_action, emb, cache: KVCache):
        """One frame through the trunk after the cached frames: the pure-tensor per-frame step.

        inputs (B,S) ids or (B,S,C) latents; token_mask (B,S) bool; prev_action (B,A) raw, NaN =
        unknown; emb (B,) long. No data-dependent Python control flow: the frame is the
        first of its sequence iff the cache is empty (a tensor test). Returns hidden image
        tokens (B,S,D), action read-out (B,D), and the frame's keys/values (L,B,S,H,1,hd).
        """
        is_first = ~cache.valid.any()
        h, readout, k, v = self._forward_frames(
            inputs[:, None], token_mask[:, None], prev_action[:, None], is_first.reshape(1), emb, cache
        )
        return h[:, 0], readout[:, 0], k, v

    @torch.no_grad()
    def append_frames(self, cache: KVCache, frames, actions_in, embodiment) -> KVCache:
        """Commit known frames (B,T,h,w[,C]) into the cache; one trunk pass for all T frames.

        actions_in (B,T,A): the action that produced each frame (NaN or None = unknown; the
        first frame of an empty cache gets the "no action" embedding regardless).
        """
        self._check_frames(frames, "frames")
        B, T = frames.shape[:2]
        if cache.valid.shape[0] < T:
            raise ValueError(f"can append at most max_frames-1={cache.valid.shape[0]} frames at once, got {T}")
        emb = self._embodiment_tensor(embodiment, B, frames.device)
        if actions_in is None:
            actions_in = torch.full((B, T, self.max_step_dim), float("nan"), device=frames.device)
        self._check_actions(actions_in, "actions_in", self._need_width(emb), allow_nan=True)
        actions_in = self._pad_actions(actions_in)
        cache = cache.expand(B)
        mask = torch.zeros(B, T, self.num_image_tokens, dtype=torch.bool, device=frames.device)
        is_first = (torch.arange(T, device=frames.device) == 0) & ~cache.valid.any()
        _, _, k, v = self._forward_frames(frames.flatten(2, 3), mask, actions_in, is_first, emb, cache)
        return cache.push(k, v)

    def append_frame(self, cache: KVCache, frame, action_in, embodiment) -> KVCache:
        """``append_frames`` for one frame (B,h,w[,C]); action_in (B,A) produced it (None = unknown)."""
        return self.append_frames(cache, frame[:, None], None if action_in is None else action_in[:, None], embodiment)

    def commit_step(self, frame_inputs, frame_action, inputs, token_mask, prev_action, emb, cache: KVCache):
        """Commit a known frame and run the next frame's decoding pass, as one two-frame causal
        pass: the pure-tensor fused step (``advance``'s first pass; exported as ``advance.onnx``).

        frame_inputs (B,S[,C]) the frame to commit, produced by frame_action (B,A) (NaN =
        unknown); inputs, token_mask, prev_action, emb as in ``step`` for the frame after it.
        The committed frame's keys/values and the next frame's outputs are exactly those of
        committing it (``append_frames``) and then calling ``step``. When the cache is full,
        the next frame does not see the slot the commit evicts (sliding window). Returns hidden
        image tokens (B,S,D) and action read-out (B,D) of the next frame, and the committed
        frame's keys/values (L,B,S',H,1,hd) for ``KVCache.push``.
        """
        valid = cache.valid
        evicted = valid.all() & (torch.arange(valid.shape[0], device=valid.device) == 0)
        visible = torch.stack([valid, valid & ~evicted])  # (2, P)
        h, readout, k, v = self._forward_frames(
            torch.stack([frame_inputs, inputs], dim=1),
            torch.stack([torch.zeros_like(token_mask), token_mask], dim=1),
            torch.stack([frame_action, prev_action], dim=1),
            torch.stack([~valid.any(), torch.zeros_like(valid[0])]),
            emb,
            cache,
            visible,
        )
        return h[:, 1], readout[:, 1], k[..., :1, :], v[..., :1, :]

    def _fused_commit_fn(self, cache: KVCache, frame, action_in, action, emb, state: dict):
        """Decoding function whose first call also commits ``frame`` (``commit_step``), the
        later ones ``step`` after it. ``state["cache"]`` holds the cache after the commit."""
        state["cache"] = None
        frame_inputs = frame.flatten(1, 2)  # (B, S[, C])

        def fn(x, mask):
            if state["cache"] is None:
                h, readout, k, v = self.commit_step(frame_inputs, action_in, x, mask, action, emb, cache)
                state["cache"] = cache.push(k, v)
                return self._heads(h), readout
            h, readout, _, _ = self.step(x, mask, action, emb, state["cache"])
            return self._heads(h), readout

        return fn

    @torch.no_grad()
    def advance(
        self,
        cache: KVCache,
        frame,
        action_in,
        action,
        embodiment,
        num_steps: int = 2,
        temperature: float = 1.0,
        order: str = "random",
        generator: torch.Generator | None = None,
    ) -> tuple[KVCache, torch.Tensor, torch.Tensor]:
        """Commit ``frame`` (B,h,w[,C]), produced by ``action_in`` (B,A), and predict the frame
        that ``action`` (B,A) produces after it: ``append_frame`` + ``predict_next`` fused into
        ``num_steps`` trunk passes (instead of ``num_steps + 1``). NaN actions are unknown.

        Returns (cache with ``frame`` committed, next frame (B,h,w[,C]), action read-out (B,max_step_dim)).
        """
        self._check_sampling(num_steps, temperature, order)
        self._check_frames(frame, "frame", with_time=False)
        B = frame.shape[0]
        emb = self._embodiment_tensor(embodiment, B, frame.device)
        need = self._need_width(emb)
        self._check_actions(action_in[:, None], "action_in", need, allow_nan=True)
        self._check_actions(action[:, None], "action", need, allow_nan=True)
        action_in, action = self._pad_actions(action_in), self._pad_actions(action)
        cache = cache.expand(B)
        state: dict = {}
        fn = self._fused_commit_fn(cache, frame, action_in, action, emb, state)
        nxt, readout = self._sample_frame(fn, B, frame.device, num_steps, temperature, order, generator)
        c = self.config
        actions = self._actions_out(readout[:, None], self._selection(emb), raw=True)[:, 0]
        return state["cache"], nxt.reshape(B, c.tokens_h, c.tokens_w, *nxt.shape[2:]), actions

    def _sample_frame(
        self,
        fn,
        batch_size: int,
        device,
        num_steps: int,
        temperature: float,
        order: str,
        generator,
        diffusion_net=None,
    ):
        """Masked decoding of one frame in ``num_steps`` steps (MaskGIT / MAR).

        ``fn(inputs (B,S[,C]), mask (B,S)) -> (out, extra)`` runs the trunk and its heads: ``out``
        is the per-factor logits [(B,S,f_i)] (discrete) or the hidden tokens (B,S,D) for the
        diffusion head (continuous); ``extra`` is passed through (the action read-out). The
        cached, re-forward and graph paths all decode here, so a seed makes the same choices
        in each. ``diffusion_net`` replaces the diffusion MLP (``DiffusionHead.sample``).
        Returns (frame (B,S[,C]), ``extra`` of the last step).
        """
        c = self.config
        B, S = batch_size, self.num_image_tokens
        if c.variant == "discrete":
            x = torch.zeros(B, S, dtype=torch.long, device=device)
        else:
            x = torch.zeros(B, S, c.token_dim, device=device, dtype=self.mask_token.dtype)
        mask = torch.ones(B, S, dtype=torch.bool, device=device)
        readout = None
        for remaining in unmask_schedule(S, num_steps):
            out, readout = fn(x, mask)
            if c.variant == "discrete":
                picks = [gumbel_sample(lg, temperature, generator, order == "confidence") for lg in out]
                sampled = compose_digits([p[0] for p in picks], c.vocab_factors)  # (B, S)
            if order == "confidence":
                score = math.prod(p[1] for p in picks)  # joint probability of the factors
            else:
                score = torch.rand(B, S, generator=generator, device=device)
            # Keep the `remaining` lowest-scoring still-masked tokens masked; revealed ones stay.
            score = torch.where(mask, score, float("inf"))
            rank = score.argsort(dim=-1).argsort(dim=-1)  # (B, S)
            new_mask = rank < remaining
            reveal = mask & ~new_mask  # the same number of tokens in every row
            if c.variant == "discrete":
                x = torch.where(reveal, sampled, x)
            else:
                # As MAR does: the diffusion head runs only for the tokens this step reveals
                # (the order is random, so it does not depend on the samples). Sampling every
                # masked token and keeping a few cost M times the diffusion work.
                z = out[reveal]  # (B * n, D), row-major
                sampled = self.diffusion.sample(z, c.diff_sample_steps, temperature, generator, net=diffusion_net)
                x = x.masked_scatter(reveal[..., None].expand_as(x), sampled.to(x.dtype))
            mask = new_mask
        return x, readout

    def _check_sampling(self, num_steps, temperature, order) -> None:
        if not isinstance(num_steps, int) or not 1 <= num_steps <= self.num_image_tokens:
            raise ValueError(f"num_steps must be an int in [1, {self.num_image_tokens}], got {num_steps!r}")
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be finite and >= 0, got {temperature!r}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if order == "confidence" and self.config.variant != "discrete":
            raise ValueError("order='confidence' needs the discrete variant (continuous tokens have no confidence)")

    @torch.no_grad()
    def predict_next(
        self,
        cache: KVCache,
        action,
        embodiment,
        num_steps: int = 2,
        temperature: float = 1.0,
        order: str = "random",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the frame after the cached ones, produced by ``action`` (B,A) raw (NaN = unknown).

        Does not commit it: call ``append_frames`` with the frame you keep. Returns
        (frame (B,h,w[,C]), action read-out (B,max_step_dim) raw).
        """
        self._check_sampling(num_steps, temperature, order)
        B = action.shape[0]
        emb = self._embodiment_tensor(embodiment, B, action.device)
        self._check_actions(action[:, None], "action", self._need_width(emb), allow_nan=True)
        action = self._pad_actions(action)
        cache = cache.expand(B)

        def fn(x, mask):
            h, readout, _, _ = self.step(x, mask, action, emb, cache)
            return self._heads(h), readout

        frame, readout = self._sample_frame(fn, B, action.device, num_steps, temperature, order, generator)
        c = self.config
        actions = self._actions_out(readout[:, None], self._selection(emb), raw=True)[:, 0]
        return frame.reshape(B, c.tokens_h, c.tokens_w, *frame.shape[2:]), actions

    @torch.no_grad()
    def generate(
        self,
        context: torch.Tensor,
        context_actions: torch.Tensor,
        future_actions: torch.Tensor | None,
        embodiment: str | int,
        num_steps: int = 2,
        temperature: float = 1.0,
        order: str = "random",
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Generation:
        """Roll out H frames for N candidate action sequences that share one context.

        context (1|N, Tc, h, w[, C]); context_actions (1|N, Tc, A) aligned with it:
        context_actions[:, t] is executed after context frame t, so the last one produces
        the first predicted frame. future_actions (N, H-1, A): the actions executed after
        predicted frames 0..H-2, hence horizon H = future_actions.shape[1] + 1 (None: H = 1).
        NaN actions are "unknown" (passive video / policy rollouts). A context longer than
        max_frames - 1 keeps its newest frames; rollouts past the window slide it.
        ``use_cache=False`` re-forwards the whole window for every decoding step (reference).
        """
        c = self.config
        self._check_sampling(num_steps, temperature, order)
        idx = self._embodiment_index(embodiment)
        need = c.embodiments[idx].step_action_dim
        self._check_frames(context, "context")
        self._check_actions(context_actions, "context_actions", need, allow_nan=True)
        Bc, Tc = context.shape[:2]
        if context_actions.shape[1] != Tc:
            raise ValueError(f"context_actions has {context_actions.shape[1]} steps, context has {Tc} frames")
        A = context_actions.shape[-1]
        if future_actions is None:
            future_actions = context_actions.new_zeros(max(Bc, context_actions.shape[0]), 0, A)
        self._check_actions(future_actions, "future_actions", need, allow_nan=True)
        N, H = future_actions.shape[0], future_actions.shape[1] + 1
        if future_actions.shape[-1] != A:
            raise ValueError(f"future_actions width {future_actions.shape[-1]} != context_actions width {A}")
        for name, b in (("context", Bc), ("context_actions", context_actions.shape[0])):
            if b not in (1, N):
                raise ValueError(f"{name} batch must be 1 or N={N} (the candidates), got {b}")
        W = c.max_frames - 1
        context, context_actions = context[:, -W:], self._pad_actions(context_actions[:, -W:])
        future_actions = self._pad_actions(future_actions)
        device = context.device
        # prev[t] = the action that produced frame t (row 0 unused): the model's alignment.
        ctx_prev = torch.cat([torch.full_like(context_actions[:, :1], float("nan")), context_actions[:, :-1]], 1)
        steps = torch.cat([context_actions[:, -1:].expand(N, -1, -1), future_actions], dim=1)  # (N, H, A)
        emb = torch.full((N,), idx, dtype=torch.long, device=device)

        frames, actions, state = [], [], {}
        if use_cache:
            # Candidates share the prefill unless their context actions differ (batch N).
            Bp = max(Bc, ctx_prev.shape[0])
            ctx_frames = context.expand(Bp, *[-1] * (context.dim() - 1))
            cache = self.append_frames(self.init_cache(1, device), ctx_frames, ctx_prev.expand(Bp, -1, -1), idx)
            cache = cache.expand(N)
        else:
            hist = context.flatten(2, 3).expand(N, *[-1] * (context.dim() - 2))  # (N, Tc, S[, C])
            hist_prev = ctx_prev.expand(N, -1, -1)
        for t in range(H):
            act = steps[:, t]  # (N, A): produces this frame
            if use_cache and t == 0:

                def fn(x, mask, act=act, cache=cache):
                    h, readout, _, _ = self.step(x, mask, act, emb, cache)
                    return self._heads(h), readout

            elif use_cache:  # commit the previous frame inside the first decoding pass
                fn = self._fused_commit_fn(cache, frames[-1], steps[:, t - 1], act, emb, state)

            else:
                win, win_prev = hist[:, -W:], torch.cat([hist_prev, act[:, None]], 1)[:, -(W + 1) :]
                Tw = win.shape[1] + 1
                is_first = torch.arange(Tw, device=device) == 0

                def fn(x, mask, win=win, win_prev=win_prev, is_first=is_first):
                    inp = torch.cat([win, x[:, None]], dim=1)
                    m = torch.cat([torch.zeros_like(mask)[:, None].expand(-1, win.shape[1], -1), mask[:, None]], 1)
                    h, readout, _, _ = self._forward_frames(inp, m, win_prev, is_first, emb)
                    return self._heads(h[:, -1]), readout[:, -1]

            frame, readout = self._sample_frame(fn, N, device, num_steps, temperature, order, generator)
            frames.append(frame.reshape(N, c.tokens_h, c.tokens_w, *frame.shape[2:]))
            actions.append(self._actions_out(readout[:, None], self._selection(emb), raw=True)[:, 0])
            if use_cache and t > 0:
                cache = state["cache"]
            if not use_cache:
                hist = torch.cat([hist, frame[:, None]], dim=1)  # (N, T+1, S[, C])
                hist_prev = torch.cat([hist_prev, act[:, None]], dim=1)
        out = torch.stack(frames, dim=1)  # (N, H, h, w[, C])
        acts = torch.stack(actions, dim=1)  # (N, H, max_step_dim)
        acts = F.pad(acts, (0, max(0, A - acts.shape[-1])))[..., :A]
        return Generation(frames=out, actions=acts)


class FrameStep(nn.Module):
    """The per-frame step for one fixed embodiment as a pure tensor module (for ONNX / TensorRT).

    forward(inputs (B,S) ids | (B,S,C) latents, token_mask (B,S) bool, prev_action (B,A) raw
    (NaN = unknown), cache_k, cache_v (L,B,S',H,P,hd), cache_valid (P,) bool, cache_pos () long) ->
    (logits per vocabulary factor... | hidden (B,S,D), actions (B,max_step_dim) raw,
    frame_k, frame_v (L,B,S',H,1,hd)). The caller commits a frame with ``KVCache.push``
    (concatenate along P, keep the newest P; valid likewise; pos + 1). Decoding (MaskGIT / DDIM)
    stays outside, in the runtime.
    """

    def __init__(self, model: HMA, embodiment: str | int):
        super().__init__()
        self.model = model
        self.register_buffer("emb", torch.tensor([model._embodiment_index(embodiment)]), persistent=False)

    def _outputs(self, h, readout, k, v, emb):
        m = self.model
        actions = m._actions_out(readout[:, None], m._selection(emb), raw=True)[:, 0]
        heads = tuple(m._token_logits(h)) if m.config.variant == "discrete" else (h,)
        return (*heads, actions, k, v)

    def forward(self, inputs, token_mask, prev_action, cache_k, cache_v, cache_valid, cache_pos):
        emb = self.emb.expand(inputs.shape[0])
        cache = KVCache(cache_k, cache_v, cache_valid, cache_pos)
        return self._outputs(*self.model.step(inputs, token_mask, prev_action, emb, cache), emb)


class FrameAdvance(FrameStep):
    """``HMA.commit_step`` as a pure tensor module: commit a known frame and run the next
    frame's first decoding pass in one graph call, so a rollout makes M calls per frame, not
    M + 1. forward(frame_inputs, frame_action, then ``FrameStep``'s inputs) -> ``FrameStep``'s
    outputs, the keys/values being the committed frame's."""

    def forward(
        self, frame_inputs, frame_action, inputs, token_mask, prev_action, cache_k, cache_v, cache_valid, cache_pos
    ):
        emb = self.emb.expand(inputs.shape[0])
        cache = KVCache(cache_k, cache_v, cache_valid, cache_pos)
        out = self.model.commit_step(frame_inputs, frame_action, inputs, token_mask, prev_action, emb, cache)
        return self._outputs(*out, emb)
