"""The shipped franka model (hma_ros/models/hma_franka) on the bundled franka recording:
it loads through the robot config, and a lookahead rollout ranks the candidate that really
reaches the goal image above random ones, as an MPC loop needs."""

import numpy as np
import pytest
import torch

from hma_ros.data.importers import import_mcap
from hma_ros.data.windows import WindowDataset
from hma_ros.eval.metrics import sample_normalized_random_actions
from hma_ros.paths import share_dir
from hma_ros.runtime.robot_config import load_robot_config
from hma_ros.runtime.runner import WorldModelRunner

CONTEXT, HORIZON, RANDOM = 4, 4, 7


@pytest.fixture(scope="module")
def franka():
    robot = load_robot_config("franka")
    assert robot.checkpoint_path().is_dir(), f"the shipped model is missing: {robot.checkpoint_path()}"
    return robot, WorldModelRunner.from_checkpoint(robot.checkpoint_path(), robot)


@pytest.fixture(scope="module")
def recording(tmp_path_factory, franka):
    robot, _ = franka
    ds = import_mcap(share_dir() / "data" / "franka_demo.mcap", robot, tmp_path_factory.mktemp("demo"))
    # A window at every 2 Hz step: frames (T, 64, 64, 3), actions (T, stride * action_dim).
    return WindowDataset(ds, CONTEXT + HORIZON, window_step=ds.spec.stride)


def test_shipped_model_matches_the_franka_robot(franka):
    robot, runner = franka
    assert runner.spec.name == "franka"
    assert runner.image_size == (64, 64)
    assert (runner.spec.action_dim, runner.spec.stride) == (robot.action_dim, robot.stride)
    assert len(runner.model.config.embodiments) >= 4  # pre-trained on other robots, post-trained for franka


def test_rollout_ranks_the_goal_reaching_candidate_first(franka, recording):
    _, runner = franka
    spec = runner.spec
    mean = torch.tensor(spec.action_mean).repeat(spec.stride)
    std = torch.tensor(spec.action_std).repeat(spec.stride)
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    wins, rank_first = 0, 0
    for i in range(0, len(recording), 3):
        w = recording[i]
        frames, actions = np.asarray(w["frames"]), np.asarray(w["actions"])
        true = actions[CONTEXT - 1 : CONTEXT - 1 + HORIZON]  # produces frames CONTEXT .. CONTEXT+H-1
        rand = sample_normalized_random_actions((RANDOM, HORIZON, mean.numel()), mean, std, generator=gen).numpy()
        cand = np.concatenate([true[None], rand]).astype(np.float32)
        goal = frames[CONTEXT + HORIZON - 1]
        r = runner.rollout(
            cand, context=(frames[:CONTEXT], actions[:CONTEXT]), goal=goal, seed=int(rng.integers(1 << 30))
        )
        wins += 1
        rank_first += int(np.argmin(r.costs) == 0)
    # Chance would put the true candidate first 1 time in 8; a controllable model does far better.
    assert wins >= 3
    assert rank_first / wins >= 0.6, f"true actions ranked first in {rank_first}/{wins} windows"
