"""Config and presets: validation messages that name the problem, JSON round trip, presets."""

import dataclasses
import re

import pytest

from hma_ros.model import PRESETS, EmbodimentSpec, HMAConfig, make_config

EMBS = (EmbodimentSpec("franka", 8, 20.0), EmbodimentSpec("pusht", 2, 10.0))


def test_embodiment_stride_and_step_dim():
    franka = EMBS[0]
    assert franka.stride == 10
    assert franka.step_action_dim == 80
    assert franka.action_mean == (0.0,) * 8
    assert franka.action_std == (1.0,) * 8


def test_config_json_round_trip_is_equal():
    cfg = make_config("hma_tiny", EMBS, variant="continuous")
    assert HMAConfig.from_dict(cfg.to_dict()) == cfg


def test_hma_base_preset_matches_the_paper():
    cfg = make_config("hma_base", EMBS)
    assert (cfg.depth, cfg.dim, cfg.num_heads) == (32, 256, 8)
    assert cfg.num_image_tokens == 256
    assert cfg.num_action_tokens == 64
    assert cfg.max_frames == 12
    assert cfg.vocab_size == 2**18


def test_small_preset_is_8x8():
    cfg = make_config("hma_small", EMBS)
    assert (cfg.tokens_h, cfg.tokens_w) == (8, 8)


def test_config_is_frozen():
    cfg = make_config("hma_tiny", EMBS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dim = 64


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"dim": 30, "num_heads": 4}, "dim=30 must be divisible by num_heads=4"),
        ({"variant": "vq"}, "'vq'"),
        ({"action_conditioning": "film"}, "'film'"),
        ({"num_prompt_frames": 6}, "num_prompt_frames"),
        ({"vocab_factors": (1, 8)}, "vocab_factors"),
        ({"action_conditioning": "concat", "num_action_tokens": 0}, "num_action_tokens"),
        ({"diff_sample_steps": 500, "diff_train_steps": 100}, "diff_sample_steps"),
        ({"min_mask_ratio": 1.0}, "min_mask_ratio"),
        ({"depth": 0}, "depth"),
    ],
)
def test_bad_config_raises_naming_the_field(overrides, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        make_config("hma_tiny", EMBS, **overrides)


def test_bad_embodiments_raise():
    with pytest.raises(ValueError, match="not a multiple"):
        EmbodimentSpec("x", 2, 5.0)
    with pytest.raises(ValueError, match="action_std"):
        EmbodimentSpec("x", 2, 10.0, action_std=(1.0, 0.0))
    with pytest.raises(ValueError, match="unique"):
        make_config("hma_tiny", (EMBS[0], EMBS[0]))
    with pytest.raises(ValueError, match="at least one embodiment"):
        make_config("hma_tiny", ())


def test_unknown_preset_and_fields():
    with pytest.raises(KeyError, match="hma_huge"):
        make_config("hma_huge", EMBS)
    with pytest.raises(ValueError, match="bogus"):
        HMAConfig.from_dict({**make_config("hma_tiny", EMBS).to_dict(), "bogus": 1})
    assert {"hma_base", "hma_small", "hma_tiny"} <= set(PRESETS)
