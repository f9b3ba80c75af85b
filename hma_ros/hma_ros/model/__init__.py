"""hma_ros.model: the HMA world model (config, presets, model, checkpoints)."""

from .checkpoint import load_model, save_checkpoint
from .config import ACTION_CONDITIONINGS, MODEL_HZ, SETTINGS, VARIANTS, EmbodimentSpec, HMAConfig
from .hma import HMA, Generation, KVCache
from .presets import PRESETS, make_config

__all__ = [
    "ACTION_CONDITIONINGS",
    "HMA",
    "MODEL_HZ",
    "PRESETS",
    "SETTINGS",
    "VARIANTS",
    "EmbodimentSpec",
    "Generation",
    "HMAConfig",
    "KVCache",
    "load_model",
    "make_config",
    "save_checkpoint",
]
