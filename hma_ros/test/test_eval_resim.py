"""PSNR* and perplexity*: re-simulating windows under perturbed actions, on the real PushT
simulator and the shipped checkpoint (pre-trained on pusht among others)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from hma_ros.data.format import EmbodimentDataset
from hma_ros.eval.evaluate import evaluate, format_table
from hma_ros.eval.resim import ResimulationError, Resimulator, perturb_step_actions, resim_unavailable
from hma_ros.sim.generate import generate

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "hma_franka"
STRIDE = 5  # pusht: 10 Hz control, 2 Hz model steps


@pytest.fixture(scope="module")
def pusht(tmp_path_factory):
    root = tmp_path_factory.mktemp("resim")
    generate("pusht", 2, root, seed=11, steps=12 * STRIDE, progress=False)  # 12 frames per episode
    return root / "pusht"


def recorded_steps(ds, start_row, first, k):
    rows = np.asarray(ds.actions[start_row + first * STRIDE : start_row + (first + k) * STRIDE])
    return rows.reshape(k, -1)


def test_replay_reproduces_the_window_and_follows_perturbed_actions(pusht):
    ds = EmbodimentDataset.open(pusht)
    start = int(ds.episode_starts[1]) + STRIDE  # episode 1, from its second frame
    stored = np.asarray(ds.frames[(start + np.arange(9) * STRIDE) // ds.frame_every]).astype(int)
    with Resimulator(ds) as sim:
        same = sim.window_frames(start, 9, 3, recorded_steps(ds, start, 3, 5))
        shifted = perturb_step_actions(
            recorded_steps(ds, start, 3, 5), np.asarray(ds.spec.action_std), 2.0, np.random.default_rng(0)
        )
        moved = sim.window_frames(start, 9, 3, shifted)
        with pytest.raises(ResimulationError, match="past the window"):
            sim.window_frames(start, 9, 3, np.concatenate([shifted, shifted]))
    assert same.shape == (9, 64, 64, 3)
    assert np.abs(same - stored).mean() < 0.5
    np.testing.assert_array_equal(moved[:4], same[:4])  # the steps before the change
    assert np.abs(moved[5:].astype(int) - stored[5:]).mean() > 0.5  # the pusher went elsewhere


def test_perturbation_is_held_per_step_and_scaled_by_the_action_std():
    steps = np.zeros((3, 4 * 2), np.float32)  # 3 steps of stride 4, action dim 2
    out = perturb_step_actions(steps, np.array([1.0, 10.0]), 0.5, np.random.default_rng(1))
    rows = out.reshape(3, 4, 2)
    assert (rows == rows[:, :1]).all()  # held over the step's control rows
    assert np.abs(rows[..., 1]).mean() > 5 * np.abs(rows[..., 0]).mean()
    with pytest.raises(ValueError, match="multiple of the action dim"):
        perturb_step_actions(np.zeros((2, 5)), np.ones(2), 0.5, np.random.default_rng(0))


def test_datasets_that_cannot_be_replayed_say_why(pusht, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(pusht, other)
    ds = EmbodimentDataset.open(other, writable=True)
    ds.update_source(generator="a rosbag")
    assert "not written by hma_ros.sim.generate" in resim_unavailable(EmbodimentDataset.open(other))
    with pytest.raises(ValueError, match=r"PSNR\* needs re-simulation: .*not written by"):
        evaluate(
            SHIPPED, other, episodes="all", context=2, horizon=2, trials=1, progress=False, frechet=False, resim=True
        )
    with pytest.raises(ValueError, match="resim_windows must be >= 1"):
        evaluate(SHIPPED, pusht, episodes="all", context=2, horizon=2, trials=1, progress=False, resim_windows=0)
    with pytest.raises(ValueError, match="resim_sigma must be > 0"):
        evaluate(SHIPPED, pusht, episodes="all", context=2, horizon=2, trials=1, progress=False, resim_sigma=-1.0)
    # A simulator that does not reproduce the recording is caught, not scored against.
    ds.update_source(generator="hma_ros.sim.generate")
    frames = np.memmap(other / "frames.u8", np.uint8, "r+")
    frames[:] = 255 - frames
    frames.flush()
    with pytest.raises(ResimulationError, match="does not reproduce its stored frames"):
        evaluate(SHIPPED, other, episodes="all", context=2, horizon=2, trials=1, progress=False, frechet=False)


def test_every_metric_on_a_simulated_dataset(pusht):
    r = evaluate(
        SHIPPED,
        pusht,
        episodes="all",
        context=2,
        horizon=7,  # 9-frame videos: the shortest I3D takes
        trials=1,
        temperature=0,
        max_windows=2,
        progress=False,
    )
    rs = r["resim"]
    assert rs["windows"] == 2
    assert {k: len(v) for k, v in rs["psnr_star_per_step"].items()} == {
        "model": 7,
        "recorded_actions": 7,
        "copy_last_frame": 7,
    }
    assert all(np.isfinite(v).all() for v in rs["psnr_star_per_step"].values())
    # The model under the recorded actions predicts the recording: against the recording it
    # matches the main table, against the re-simulated (perturbed) truth it is another number.
    assert rs["psnr_star_per_step"]["recorded_actions"] != r["psnr_per_step"]["model"]
    assert 1.0 <= rs["perplexity_star"]["model"] <= 4096
    assert 1.0 <= r["perplexity"]["value"] <= r["perplexity"]["vocab"] == 4096
    assert len(r["perplexity"]["per_step"]) == 7
    assert r["frechet"]["fvd"]["frames"] == 9
    assert r["frechet"]["fvd"]["samples"] == 2
    assert r["frechet"]["fid"]["samples"] == 2 * 7
    assert set(r["frechet"]["fvd"]["scores"]) == {
        "model",
        "copy_last_frame",
        "passive_model",
        "tokenizer_reconstruction",
    }
    table = format_table(r)
    for text in ("| PSNR* model, perturbed actions |", "Perplexity* of the re-simulated frames", "FVD (", "FID ("):
        assert text in table
    assert "Not computed" not in table
