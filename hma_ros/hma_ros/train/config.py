"""Training configuration: one frozen, validated dataclass read from YAML plus overrides.

A training run is described by a YAML file (``hma_ros/config/train/*.yaml``) whose sections
mirror the dataclasses below; command-line overrides use dotted keys
(``optim.lr=1e-4 data.batch_size=8``). Unknown keys and bad values raise ``ValueError``
naming the full dotted key, so a typo never silently trains with a default.
The resolved config is saved in every checkpoint's ``trainer.json``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hma_ros.model.config import SETTINGS


class ConfigError(ValueError):
    """A bad training config; the message names the dotted key."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass(frozen=True)
class DataConfig:
    """Where the training windows come from.

    Attributes:
        roots: dataset roots; each holds one folder per embodiment (``<root>/<name>/``).
        embodiments: embodiment names to train on, looked up in ``roots`` in order, or
            embodiment folders (paths). Post-training adds ``--embodiment`` to these.
        tokenizer: tokenizer folder when the datasets hold frames (tokenised on the fly on
            the training device); ``None`` when they hold pre-tokenised ``tokens``/``latents``.
        eval_episodes: episodes per embodiment held out of training for evaluation (the
            last ones by episode id); 0 disables the held-out split.
        temperature: mixture weights are ``n_e ** temperature`` with ``n_e`` the training
            windows of embodiment ``e`` (paper: 1/3).
        batch_size: global batch (summed over processes); one embodiment per batch.
        num_workers: data loader worker processes per training process (0: in-process).
    """

    roots: tuple[str, ...] = ()
    embodiments: tuple[str, ...] = ()
    tokenizer: str | None = None
    eval_episodes: int = 2
    temperature: float = 1.0 / 3.0
    batch_size: int = 8
    num_workers: int = 0

    def validate(self, key: str) -> None:
        _check(
            len(set(self.embodiments)) == len(self.embodiments),
            f"{key}.embodiments",
            f"names must be unique, got {list(self.embodiments)}",
        )
        _check(self.eval_episodes >= 0, f"{key}.eval_episodes", f"must be >= 0, got {self.eval_episodes}")
        _check(
            math.isfinite(self.temperature) and 0.0 <= self.temperature <= 1.0,
            f"{key}.temperature",
            f"must be in [0, 1], got {self.temperature}",
        )
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.num_workers >= 0, f"{key}.num_workers", f"must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class ModelSection:
    """Which model to build: a preset of ``hma_ros.model.presets`` plus field overrides.

    The embodiments are not set here: they come from the datasets' metadata (pre-training)
    or from the pre-trained checkpoint plus the new embodiment (post-training).
    """

    preset: str = "hma_small"
    overrides: dict[str, Any] = field(default_factory=dict)

    def validate(self, key: str) -> None:
        _check(bool(self.preset), f"{key}.preset", "a preset name is required")
        _check(
            "embodiments" not in self.overrides,
            f"{key}.overrides.embodiments",
            "embodiments come from the datasets' metadata, not from the config",
        )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr`` at the last step.

    Weight decay applies to matrices only (biases, norms and gains are not decayed).
    """

    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0

    def validate(self, key: str) -> None:
        _check(self.lr > 0 and math.isfinite(self.lr), f"{key}.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, f"{key}.min_lr", f"must be in [0, lr={self.lr}], got {self.min_lr}")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"{key}.betas",
            f"must be two values in [0, 1), got {list(self.betas)}",
        )
        _check(self.grad_clip >= 0, f"{key}.grad_clip", f"must be >= 0 (0 disables), got {self.grad_clip}")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation during training (rank 0 only).

    Attributes:
        every: evaluate every this many steps (0: never; always once at the end if > 0).
        batches: held-out batches per embodiment.
        batch_size: windows per held-out batch.
        hooks: names in ``hma_ros.train.evaluation.EVAL_HOOKS`` (``loss``, ``psnr``).
    """

    every: int = 500
    batches: int = 2
    batch_size: int = 8
    hooks: tuple[str, ...] = ("loss",)

    def validate(self, key: str) -> None:
        _check(self.every >= 0, f"{key}.every", f"must be >= 0, got {self.every}")
        _check(self.batches >= 1, f"{key}.batches", f"must be >= 1, got {self.batches}")
        _check(self.batch_size >= 1, f"{key}.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints under ``<out_dir>/checkpoints/step_XXXXXXXX/`` (always one at the end)."""

    every: int = 1000
    keep_last: int = 3

    def validate(self, key: str) -> None:
        _check(self.every >= 0, f"{key}.every", f"must be >= 0, got {self.every}")
        _check(self.keep_last >= 1, f"{key}.keep_last", f"must be >= 1, got {self.keep_last}")


@dataclass(frozen=True)
class PostTrainConfig:
    """Post-training a new embodiment on a pre-trained trunk (``hma_ros.train.posttrain``).

    Attributes:
        init: pre-trained checkpoint folder (``config.json`` + ``model.safetensors``).
        replace_embodiments: the new model knows only the new embodiments; otherwise it
            keeps the pre-trained ones (with their stems and heads) and adds the new ones.
        freeze_trunk: train only the per-embodiment modules (stems, heads, modulations).
    """

    init: str | None = None
    replace_embodiments: bool = False
    freeze_trunk: bool = False

    def validate(self, key: str) -> None:
        pass


@dataclass(frozen=True)
class TrainConfig:
    """One training run. See the section classes for the fields.

    Attributes:
        out_dir: run folder: ``checkpoints/``, ``tensorboard/``, ``train_config.yaml``.
        steps: optimiser steps in total (a resumed run continues up to this).
        seed: seeds model init, data order, masking; a run is reproducible from it.
        settings: fraction of batches per training setting (paper §3: forward dynamics,
            passive video, full dynamics, policy); normalised to sum to 1.
        log_every: steps between TensorBoard scalars (and the progress bar's loss).
        tensorboard: write TensorBoard event files under ``<out_dir>/tensorboard``.
        device: ``auto`` (CUDA if present, else CPU), ``cpu`` or ``cuda``.
    """

    out_dir: str = "out/train"
    steps: int = 1000
    seed: int = 0
    settings: dict[str, float] = field(default_factory=lambda: {"full": 1.0})
    log_every: int = 10
    tensorboard: bool = True
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    posttrain: PostTrainConfig = field(default_factory=PostTrainConfig)

    def __post_init__(self) -> None:
        _check(bool(self.out_dir), "out_dir", "an output folder is required")
        _check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        _check(self.device in ("auto", "cpu", "cuda"), "device", f"must be auto|cpu|cuda, got {self.device!r}")
        _check(len(self.settings) >= 1, "settings", "at least one setting is required")
        for name, frac in self.settings.items():
            _check(name in SETTINGS, f"settings.{name}", f"unknown setting; known: {list(SETTINGS)}")
            _check(frac >= 0 and math.isfinite(frac), f"settings.{name}", f"must be >= 0, got {frac}")
        _check(sum(self.settings.values()) > 0, "settings", "fractions must not all be 0")
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate(f.name)

    @property
    def settings_probs(self) -> dict[str, float]:
        total = sum(self.settings.values())
        return {k: v / total for k, v in sorted(self.settings.items()) if v > 0}

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return _build(cls, d, "")


def _to_plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x):
        return {f.name: _to_plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, tuple | list):
        return [_to_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    return x


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type ``tp``; raise naming ``key`` if impossible."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is tuple:
        if isinstance(value, str | int | float):
            value = [value]  # a single value where a list is expected: `roots: /data`
        _check(isinstance(value, list | tuple), key, f"expected a list, got {value!r}")
        inner = args[0]
        out = tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) == 2 and args[1] is not Ellipsis:
            _check(len(out) == len(args), key, f"expected {len(args)} values, got {list(value)}")
        return out
    if origin is dict:
        _check(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        vt = args[1]
        return {str(k): (v if vt is Any else _coerce(v, vt, f"{key}.{k}")) for k, v in value.items()}
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        _check(ok, key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        _check(not isinstance(value, bool), key, f"expected a number, got {value!r}")
        try:  # YAML 1.1 reads `3e-4` as a string
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        _check(
            isinstance(value, str | int | float) and not isinstance(value, bool),
            key,
            f"expected a string, got {value!r}",
        )
        return str(value)
    return value


def _build(cls: type, d: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; known keys here: {names}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in d.items()}
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` -> ``(["optim", "lr"], 1e-4)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected dotted.key=value")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (copied); sections are created on demand."""
    out = _deep_copy(d)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(path[: i + 1])}: is a value, cannot set {'.'.join(path)}")
            node = child
        node[path[-1]] = value
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML training config (``None``: defaults) and apply ``key=value`` overrides."""
    d: dict[str, Any] = {}
    if path is not None:
        with open(path) as f:
            d = yaml.safe_load(f) or {}
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(d).__name__}")
    d = apply_overrides(d, list(overrides))
    return TrainConfig.from_dict(d)


def save_train_config(config: TrainConfig, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
