"""Size presets: one explicit registry dict (DiT's habit) and ``make_config``."""

from __future__ import annotations

from typing import Any

from .config import EmbodimentSpec, HMAConfig

#: Preset name -> HMAConfig fields. Embodiments are never part of a preset.
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's HMA-Base (arXiv 2502.04296, Table 8): 32 blocks, d=256, 8 heads, 16x16 image
    # tokens + 64 action tokens per frame, 12 frames (4 prompt), vocabulary 2^18 = 512 x 512.
    "hma_base": dict(
        depth=32,
        dim=256,
        num_heads=8,
        tokens_h=16,
        tokens_w=16,
        num_action_tokens=64,
        max_frames=12,
        num_prompt_frames=4,
        vocab_factors=(512, 512),
        token_dim=16,
        diff_depth=3,
        diff_dim=1024,
        diff_train_steps=1000,
        diff_sample_steps=100,
    ),
    # The shipped model: 64x64 images, 8x8 tokens, sized to generate >= 20 frames/s with
    # M=2 decoding steps and the KV cache on 2 CPU cores (see benchmark.py).
    "hma_small": dict(
        depth=4,
        dim=128,
        num_heads=4,
        tokens_h=8,
        tokens_w=8,
        num_action_tokens=4,
        max_frames=12,
        num_prompt_frames=4,
        vocab_factors=(64, 64),
        token_dim=16,
        diff_depth=2,
        diff_dim=256,
        diff_train_steps=1000,
        diff_sample_steps=20,
    ),
    # Unit tests: seconds on one core.
    "hma_tiny": dict(
        depth=2,
        dim=32,
        num_heads=2,
        tokens_h=4,
        tokens_w=4,
        num_action_tokens=2,
        max_frames=6,
        num_prompt_frames=2,
        vocab_factors=(8, 8),
        token_dim=4,
        diff_depth=2,
        diff_dim=32,
        diff_train_steps=100,
        diff_sample_steps=10,
    ),
}


def make_config(preset: str, embodiments, **overrides: Any) -> HMAConfig:
    """``HMAConfig`` of a preset for the given embodiments (specs or dicts), with overrides."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; known presets: {sorted(PRESETS)}")
    embs = tuple(e if isinstance(e, EmbodimentSpec) else EmbodimentSpec.from_dict(e) for e in embodiments)
    return HMAConfig(**{**PRESETS[preset], "embodiments": embs, **overrides})
