"""Configuration of an HMA model: embodiments as data, one frozen validated config.

Everything needed to rebuild a model lives here and is saved (as JSON) inside every
checkpoint, so a checkpoint folder alone rebuilds its model (nanoGPT's habit).
Nothing mutates a config after construction: use ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

#: The model's clock: every embodiment is chunked to this rate (paper §3: 2 Hz).
MODEL_HZ = 2.0

VARIANTS = ("discrete", "continuous")
ACTION_CONDITIONINGS = (
    "modulation+concat",  # paper's default: per-block adaLN and concatenated action tokens
    "modulation",  # adaLN only
    "concat",  # action tokens only
    "add",  # stem output added to every image token
    "cross_attention",  # image tokens attend to the action tokens in each block
)
SETTINGS = ("forward_dynamics", "video", "full", "policy")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class EmbodimentSpec:
    """One robot ("embodiment", "domain" in the paper) the model knows.

    Attributes:
        name: identifier, e.g. ``"franka"``; keys the stem, head and modulation modules.
        action_dim: numbers in one raw action at the native rate (e.g. 7 joints + gripper).
        control_hz: native control rate. The 2 Hz model step covers ``stride`` raw actions.
        action_mean, action_std: z-score statistics per raw action dimension, length
            ``action_dim``; the stem normalises with them and the head de-normalises.
        action_names: optional names per raw action dimension (joint names, "gripper").
    """

    name: str
    action_dim: int
    control_hz: float
    action_mean: tuple[float, ...] = ()
    action_std: tuple[float, ...] = ()
    action_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(
            isinstance(self.name, str) and self.name.isidentifier(),
            f"embodiment name must be a Python identifier, got {self.name!r}",
        )
        _check(
            isinstance(self.action_dim, int) and self.action_dim > 0,
            f"embodiment {self.name!r}: action_dim must be a positive int, got {self.action_dim!r}",
        )
        _check(
            self.control_hz >= MODEL_HZ and math.isfinite(self.control_hz),
            f"embodiment {self.name!r}: control_hz must be >= {MODEL_HZ} Hz, got {self.control_hz!r}",
        )
        ratio = self.control_hz / MODEL_HZ
        _check(
            abs(ratio - round(ratio)) < 1e-6,
            f"embodiment {self.name!r}: control_hz={self.control_hz} is not a multiple of "
            f"{MODEL_HZ} Hz, so it cannot be chunked to {MODEL_HZ} Hz steps",
        )
        # Default stats are the identity; tuples are normalised so equality and JSON work.
        mean = tuple(float(x) for x in self.action_mean) or (0.0,) * self.action_dim
        std = tuple(float(x) for x in self.action_std) or (1.0,) * self.action_dim
        object.__setattr__(self, "action_mean", mean)
        object.__setattr__(self, "action_std", std)
        object.__setattr__(self, "action_names", tuple(str(n) for n in self.action_names))
        object.__setattr__(self, "control_hz", float(self.control_hz))
        _check(
            len(mean) == self.action_dim,
            f"embodiment {self.name!r}: action_mean has {len(mean)} values, action_dim is {self.action_dim}",
        )
        _check(
            len(std) == self.action_dim,
            f"embodiment {self.name!r}: action_std has {len(std)} values, action_dim is {self.action_dim}",
        )
        _check(
            all(math.isfinite(s) and s > 0 for s in std),
            f"embodiment {self.name!r}: action_std must be finite and > 0, got {std}",
        )
        _check(
            all(math.isfinite(m) for m in mean),
            f"embodiment {self.name!r}: action_mean must be finite, got {mean}",
        )
        _check(
            not self.action_names or len(self.action_names) == self.action_dim,
            f"embodiment {self.name!r}: {len(self.action_names)} action_names for action_dim {self.action_dim}",
        )

    @property
    def stride(self) -> int:
        """Raw actions per 2 Hz model step (paper: a robot at H Hz uses stride H/2)."""
        return int(round(self.control_hz / MODEL_HZ))

    @property
    def step_action_dim(self) -> int:
        """Numbers in one model step's action input: ``stride`` raw actions concatenated."""
        return self.action_dim * self.stride

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbodimentSpec:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class HMAConfig:
    """Architecture of one HMA model. Saved as ``config.json`` in every checkpoint.

    Attributes:
        variant: ``"discrete"`` (VQ token ids, cross-entropy, MaskGIT decoding) or
            ``"continuous"`` (latent vectors, per-token diffusion head, MAR decoding).
        depth, dim, num_heads, mlp_ratio: trunk size (paper's HMA-Base: 32, 256, 8, 4).
        tokens_h, tokens_w: image token grid per frame (paper: 16x16).
        max_frames: training window T in 2 Hz steps (paper: 12) and the length of the
            temporal KV cache; longer rollouts slide this window.
        num_prompt_frames: frames given unmasked at the start of a training window (paper: 4).
        vocab_factors: discrete only; the vocabulary is ``prod(vocab_factors)`` ids, embedded
            and predicted per factor (paper: 2^18 as 2 x 512).
        token_dim: continuous only; channels of one continuous token (latent channels x patch^2).
        num_action_tokens: action tokens concatenated to each frame (paper: 64); 0 when the
            conditioning does not concatenate.
        action_conditioning: one of ``ACTION_CONDITIONINGS`` (paper's ablation, Table 6).
        embodiments: the robots this model knows; order is irrelevant, names are unique.
        min_mask_ratio: lower bound of the cosine masking schedule in training.
        dropout: attention/MLP dropout in training.
        diff_depth, diff_dim: continuous only; residual blocks and width of the diffusion MLP.
        diff_train_steps, diff_sample_steps: diffusion steps in training and DDIM sampling
            (paper: 1000 / 100).
        diff_clip: per-step clipping bound for the predicted clean latent in DDIM.
        qk_norm: RMS-normalise queries and keys (stabilises small-batch training).
    """

    variant: str = "discrete"
    depth: int = 4
    dim: int = 128
    num_heads: int = 4
    mlp_ratio: float = 4.0
    tokens_h: int = 8
    tokens_w: int = 8
    max_frames: int = 12
    num_prompt_frames: int = 4
    vocab_factors: tuple[int, ...] = (64, 64)
    token_dim: int = 16
    num_action_tokens: int = 4
    action_conditioning: str = "modulation+concat"
    embodiments: tuple[EmbodimentSpec, ...] = field(default_factory=tuple)
    min_mask_ratio: float = 0.1
    dropout: float = 0.0
    diff_depth: int = 3
    diff_dim: int = 256
    diff_train_steps: int = 1000
    diff_sample_steps: int = 100
    diff_clip: float = 3.0
    qk_norm: bool = True

    def __post_init__(self) -> None:
        embs = tuple(e if isinstance(e, EmbodimentSpec) else EmbodimentSpec.from_dict(e) for e in self.embodiments)
        object.__setattr__(self, "embodiments", embs)
        object.__setattr__(self, "vocab_factors", tuple(int(v) for v in self.vocab_factors))
        _check(self.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {self.variant!r}")
        for name in ("depth", "dim", "num_heads", "tokens_h", "tokens_w", "max_frames"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v > 0, f"{name} must be a positive int, got {v!r}")
        _check(
            self.dim % self.num_heads == 0,
            f"dim={self.dim} must be divisible by num_heads={self.num_heads}",
        )
        _check(
            (self.dim // self.num_heads) % 2 == 0,
            f"head dim {self.dim // self.num_heads} must be even (rotary position embedding)",
        )
        _check(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        _check(
            isinstance(self.num_prompt_frames, int) and 1 <= self.num_prompt_frames < self.max_frames,
            f"num_prompt_frames must be in [1, max_frames={self.max_frames}), got {self.num_prompt_frames!r}",
        )
        _check(
            len(self.vocab_factors) >= 1 and all(v >= 2 for v in self.vocab_factors),
            f"vocab_factors must be one or more ints >= 2, got {self.vocab_factors!r}",
        )
        _check(
            isinstance(self.token_dim, int) and self.token_dim > 0,
            f"token_dim must be a positive int, got {self.token_dim!r}",
        )
        _check(
            self.action_conditioning in ACTION_CONDITIONINGS,
            f"action_conditioning must be one of {ACTION_CONDITIONINGS}, got {self.action_conditioning!r}",
        )
        concat = self.action_conditioning in ("modulation+concat", "concat", "cross_attention")
        _check(
            isinstance(self.num_action_tokens, int) and self.num_action_tokens >= (1 if concat else 0),
            f"num_action_tokens must be >= 1 for action_conditioning={self.action_conditioning!r}, "
            f"got {self.num_action_tokens!r}",
        )
        _check(len(self.embodiments) >= 1, "at least one embodiment is required")
        names = [e.name for e in self.embodiments]
        _check(len(set(names)) == len(names), f"embodiment names must be unique, got {names}")
        _check(
            0.0 <= self.min_mask_ratio < 1.0,
            f"min_mask_ratio must be in [0, 1), got {self.min_mask_ratio!r}",
        )
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")
        _check(
            self.diff_depth >= 1 and self.diff_dim >= 1,
            f"diff_depth and diff_dim must be >= 1, got {self.diff_depth!r}, {self.diff_dim!r}",
        )
        _check(
            1 <= self.diff_sample_steps <= self.diff_train_steps,
            f"diff_sample_steps must be in [1, diff_train_steps={self.diff_train_steps}], "
            f"got {self.diff_sample_steps!r}",
        )
        _check(self.diff_clip > 0, f"diff_clip must be > 0, got {self.diff_clip!r}")

    # Derived quantities: never stored, so they cannot disagree with the fields.
    @property
    def num_image_tokens(self) -> int:
        return self.tokens_h * self.tokens_w

    @property
    def vocab_size(self) -> int:
        return math.prod(self.vocab_factors)

    @property
    def embodiment_names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.embodiments)

    def embodiment(self, name: str) -> EmbodimentSpec:
        for e in self.embodiments:
            if e.name == name:
                return e
        raise KeyError(f"unknown embodiment {name!r}; this model knows {list(self.embodiment_names)}")

    def embodiment_index(self, name: str) -> int:
        self.embodiment(name)
        return self.embodiment_names.index(name)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["embodiments"] = [e.to_dict() for e in self.embodiments]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HMAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        _check(not unknown, f"unknown HMAConfig fields {unknown}; known: {sorted(known)}")
        d = dict(d)
        d["embodiments"] = tuple(EmbodimentSpec.from_dict(e) for e in d.get("embodiments", ()))
        if "vocab_factors" in d:
            d["vocab_factors"] = tuple(d["vocab_factors"])
        return cls(**d)
