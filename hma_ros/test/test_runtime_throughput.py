"""python -m hma_ros.runtime.throughput: the runner's rollout throughput without ROS."""

import json

import numpy as np
import pytest
import torch

from hma_ros.runtime import throughput


def test_scene_is_a_moving_square_on_a_gradient():
    frames = throughput.scene(4, (32, 48))
    assert frames.shape == (4, 32, 48, 3)
    assert frames.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[1])  # the square moves
    np.testing.assert_array_equal(frames[0, 0, :, 2], 96)  # the gradient's constant channel


def test_rows_per_candidate_count_and_json(tiny_franka_checkpoint, tmp_path, capsys):
    out = tmp_path / "t.json"
    argv = ["--checkpoint", str(tiny_franka_checkpoint), "--candidates", "1,3", "--horizon", "2"]
    result = throughput.main([*argv, "--repeats", "2", "--warmup", "0", "--context", "3", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"]
    assert [(r["candidates"], r["horizon"]) for r in saved["rows"]] == [(1, 2), (3, 2)]
    for r in saved["rows"]:
        assert 0 < r["seconds"] <= r["max_seconds"]
        assert r["frames_per_s"] == pytest.approx(r["candidates"] * r["horizon"] / r["seconds"])
    assert saved["live_predict_ms"] > 0
    assert saved["device"] == "cpu"
    assert "frames/s" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--candidates", "0"], "must be positive"),
        (["--horizon", "0"], "must be positive"),
        (["--device", "cuda"], "no CUDA GPU"),
    ],
)
def test_bad_arguments_exit_with_the_reason(args, match, tiny_franka_checkpoint, tmp_path, capsys):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit) as e:
        throughput.main(["--checkpoint", str(tiny_franka_checkpoint), *args, "--out", str(tmp_path / "t.json")])
    assert e.value.code == 2
    assert match in capsys.readouterr().err
