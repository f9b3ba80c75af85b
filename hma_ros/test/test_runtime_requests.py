"""Rollout request validation and action bounds, ROS-free (a request is any object with the
Rollout.Request fields)."""

from types import SimpleNamespace

import numpy as np
import pytest

from hma_ros.runtime.image import encode_image
from hma_ros.runtime.requests import RANGE_SIGMAS, ActionBounds, RolloutLimits, parse_rollout_request

A, STRIDE = 2, 3
LIMITS = RolloutLimits(max_candidates=4, max_horizon=5, default_num_steps=2)
BOUNDS = ActionBounds.from_stats([0.0, 10.0], [1.0, 2.0], factor=2.0, names=["j1", "gripper"])


def image(value=0, size=(8, 8), stamp=0.0, encoding="rgb8"):
    enc = encode_image(np.full((*size, 3), value, np.uint8), encoding)
    sec = int(stamp)
    return SimpleNamespace(
        **enc._asdict(), header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=int((stamp - sec) * 1e9)))
    )


NO_GOAL = SimpleNamespace(data=b"")


def request(n=2, h=3, values=None, **kw):
    fields = {
        "num_candidates": n,
        "horizon": h,
        "action_dim": A,
        "actions_per_step": 0,
        "candidate_actions": list(values) if values is not None else [0.0] * (n * h * STRIDE * A),
        "context_frames": [],
        "context_actions": [],
        "goal": NO_GOAL,
        "num_steps": 0,
        "seed": -1,
        "return_frames": True,
    }
    return SimpleNamespace(**{**fields, **kw})


def parse(req, bounds=BOUNDS):
    return parse_rollout_request(
        req,
        robot_name="arm",
        action_dim=A,
        stride=STRIDE,
        control_hz=6.0,
        limits=LIMITS,
        image_size=(4, 4),
        bounds=bounds,
    )


def test_a_valid_request_becomes_runner_arrays():
    values = np.arange(2 * 3 * STRIDE * A, dtype=np.float32) % 3
    ctx = [image(10, stamp=5.0), image(20, size=(16, 12), stamp=5.5, encoding="bgr8")]
    req = parse(
        request(values=values, context_frames=ctx, context_actions=[0.5] * 2 * STRIDE * A, goal=image(7), seed=3)
    )
    assert req.candidate_actions.shape == (2, 3, STRIDE * A)
    np.testing.assert_array_equal(req.candidate_actions.reshape(-1), values)
    frames, actions = req.context
    assert frames.shape == (2, 4, 4, 3)  # fitted to the model's size
    assert (frames[1] == 20).all()
    assert actions.shape == (2, STRIDE * A)
    assert req.context_stamp == pytest.approx(5.5)
    assert req.goal.shape == (4, 4, 3)
    assert (req.num_steps, req.seed, req.return_frames) == (2, 3, True)
    assert req.batch_key is None  # an own context (and a seed): runs alone
    live = parse(request())
    assert live.batch_key == (3, 2)
    assert live.seed is None


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n": 0}, r"num_candidates=0 must be in \[1, 4\]"),
        ({"n": 5}, r"num_candidates=5 must be in \[1, 4\] \(parameter max_candidates\)"),
        ({"n": 2**31, "values": []}, r"num_candidates=2147483648"),  # refused before anything is allocated
        ({"h": 6}, r"horizon=6 must be in \[1, 5\]"),
        ({"action_dim": 3}, r"action_dim=3, but robot arm has 2"),
        ({"actions_per_step": 4}, r"actions_per_step=4, but arm runs at 6 Hz: 3"),
        ({"values": [0.0] * 7}, r"candidate_actions has 7 values, expected .* = 36"),
        ({"values": [np.inf] * 36}, "NaN or inf"),
        ({"values": [1e10] * 36}, r"candidate_actions\[0, 0, 0, 0\] \(j1\) = 1e\+10 is outside \[-6, 6\]"),
        ({"num_steps": 65}, r"num_steps=65 must be in \[1, 64\]"),
        ({"context_actions": [0.0] * 6}, "context_actions given without context_frames"),
        ({"context_frames": [image()], "context_actions": [1.0]}, "context_actions has 1 values"),
        ({"context_frames": [image()], "context_actions": [np.nan] * 6}, "context_actions contains NaN"),
        ({"context_frames": [image()], "context_actions": [100.0] * 6}, r"context_actions\[0, 0, 0\] \(j1\)"),
        (
            {"context_frames": [SimpleNamespace(**{**vars(image()), "encoding": "16UC1"})], "context_actions": [0] * 6},
            r"context_frames\[0\]: unsupported image encoding",
        ),
        ({"goal": SimpleNamespace(**{**vars(image()), "step": 1})}, "goal: image step=1"),
    ],
)
def test_bad_requests_say_what_is_wrong(kw, match):
    with pytest.raises(ValueError, match=match):
        parse(request(**kw))


def test_action_bounds_are_a_multiple_of_the_recorded_range():
    bounds = ActionBounds.from_stats([1.0], [0.5], factor=3.0, names=["j"])
    half = 3.0 * RANGE_SIGMAS * 0.5
    assert bounds.problem(np.array([1.0 + half * 0.99]), "a") is None
    assert bounds.problem(np.array([1.0 - half * 0.99]), "a") is None
    assert "is outside" in bounds.problem(np.array([1.0 + half * 1.01]), "a")
    assert "= nan" in bounds.problem(np.array([np.nan]), "a")
    with pytest.raises(ValueError, match="positive"):
        ActionBounds.from_stats([0.0], [1.0], factor=0.0)
    assert parse(request(values=[1e10] * 36), bounds=None).candidate_actions.max() == 1e10  # no bounds: no check
