"""Simulated data generation: seeded, resumable, readable as 2 Hz windows (tiny episodes)."""

import numpy as np
import pytest

from hma_ros.data.format import DatasetError, EmbodimentDataset
from hma_ros.data.windows import WindowDataset
from hma_ros.sim.embodiments import EMBODIMENTS
from hma_ros.sim.generate import generate, main, make_sim, replay_episode

pytest.importorskip("robosuite")
pytest.importorskip("gym_pusht")


def _arrays(folder):
    ds = EmbodimentDataset.open(folder)
    return np.asarray(ds.frames).copy(), np.asarray(ds.actions).copy(), ds


@pytest.mark.parametrize(("name", "steps"), [("franka", 20), ("pusht", 10)])
def test_seeded_and_resumable(tmp_path, name, steps):
    generate(name, 2, tmp_path / "a", seed=7, steps=steps, tasks=None if name == "pusht" else ["Lift"], progress=False)
    # Same seed in two steps (a resumed run) gives the same bytes as one run.
    kw = {"seed": 7, "steps": steps, "tasks": None if name == "pusht" else ["Lift"], "progress": False}
    generate(name, 1, tmp_path / "b", **kw)
    stats = generate(name, 2, tmp_path / "b", **kw)
    assert stats["skipped"] == 1
    assert stats["written"] == 1
    fa, aa, ds = _arrays(tmp_path / "a" / name)
    fb, ab, _ = _arrays(tmp_path / "b" / name)
    # A reused robosuite env leaves ~1e-9 float noise (solver state); nothing visible.
    np.testing.assert_allclose(aa, ab, rtol=0, atol=1e-5)
    assert np.abs(fa.astype(int) - fb).max() <= 1
    emb = EMBODIMENTS[name]
    assert ds.spec.action_dim == emb.action_dim
    assert ds.spec.action_names == emb.action_names
    assert ds.num_frames == 2 * steps // ds.spec.stride
    assert fa.shape[1:] == (64, 64, 3)
    assert fa.std() > 5, "frames are blank"
    assert np.abs(np.diff(aa, axis=0)).sum() > 0, "actions never change"
    assert all("policy" in i and "success" in i for i in ds.episode_info)
    item = WindowDataset(ds, num_frames=1)[0]
    assert item["actions"].shape == (1, ds.spec.step_action_dim)
    # Resuming with other settings would silently mix two datasets.
    with pytest.raises(DatasetError, match="resuming"):
        generate(name, 3, tmp_path / "b", **{**kw, "seed": 8})


def test_joint_actions_are_absolute_targets_near_the_arm(tmp_path):
    main(
        [
            "--embodiment",
            "ur5e",
            "--episodes",
            "1",
            "--out",
            str(tmp_path),
            "--steps",
            "10",
            "--task",
            "Lift",
            "--no-progress",
        ]
    )
    ds = EmbodimentDataset.open(tmp_path / "ur5e")
    assert ds.spec.control_hz == 10.0
    assert ds.spec.stride == 5
    a = np.asarray(ds.actions)
    assert a.shape == (10, 7)
    # Absolute joint positions of a UR5e at its home pose, not deltas in [-1, 1].
    assert np.abs(a[:, :6]).max() > 1.0
    assert np.abs(np.diff(a[:, :6], axis=0)).max() < 0.2
    assert set(np.unique(a[:, 6])) <= {-1.0, 1.0}


def test_replay_reproduces_frames_and_follows_perturbed_actions(tmp_path):
    generate("pusht", 1, tmp_path, seed=3, steps=30, progress=False)
    ds = EmbodimentDataset.open(tmp_path / "pusht")
    info, actions = ds.episode_info[0], np.asarray(ds.actions)
    sim = make_sim(EMBODIMENTS["pusht"], info["task"])
    try:
        same = replay_episode(sim, info["seed"], actions, ds.frame_every)
        moved = replay_episode(sim, info["seed"], actions + np.array([60.0, 0.0], np.float32), ds.frame_every)
    finally:
        sim.close()
    stored = np.asarray(ds.frames).astype(int)
    assert np.abs(same - stored).mean() < 0.5
    assert np.abs(moved[1:] - stored[1:]).mean() > 0.5  # the pusher went elsewhere
