"""`make demo` (hma_ros.nodes.demo): pairing predictions with the frames that arrived later, and
the whole demo on the bundled recording with a tiny random checkpoint (conftest.py)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("hma_ros_interfaces.msg")

from hma_ros.eval.video import read_video
from hma_ros.nodes import demo
from hma_ros.paths import share_dir

pytestmark = pytest.mark.ros
BUNDLED = share_dir() / "data" / "franka_demo.mcap"


def frame(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


def test_recorder_pairs_predictions_with_later_frames_across_loops():
    rec = demo.Recorder((8, 8))
    # Pass 1: a 10 Hz camera over 2 s of recording time, frame value = 10 * stamp.
    for i in range(21):
        rec.add_camera(100.0 + 0.1 * i, frame(i), received=1000.0 + 0.1 * i)
    rec.add_prediction(100.5, np.stack([frame(200), frame(201), frame(202)]), received=1000.8)
    # The recording loops: stamps restart; a prediction for 100.5 now belongs to pass 2.
    for i in range(8):
        rec.add_camera(100.0 + 0.1 * i, frame(100 + i), received=1003.0 + 0.1 * i)
    rec.add_prediction(100.5, np.stack([frame(210), frame(211), frame(212)]), received=1003.9)
    rec.close()
    rec.add_camera(101.0, frame(9), received=1004.0)  # ignored after close
    assert rec.camera_frames == 29

    first, second = rec.ticks()
    assert first.latency == pytest.approx(0.3)  # frame 100.5 arrived at 1000.5
    assert first.observed[0, 0, 0] == 5
    assert [a[0, 0, 0] for a in first.actual] == [10, 15, 20]  # frames at 101.0, 101.5, 102.0
    assert second.latency == pytest.approx(0.4)
    assert second.observed[0, 0, 0] == 105
    assert second.actual[1] is None
    assert second.actual[2] is None
    assert second.actual[0] is None  # 101.0 never arrived in pass 2 either

    psnr = demo.psnr_per_step([first, second], 3)
    assert psnr["pairs"] == [1, 1, 1]
    assert all(np.isfinite(v) for v in psnr["model"] + psnr["copy_last_frame"])
    # Positive control: a perfect prediction scores the cap, the copy-last baseline does not.
    perfect = demo.Tick(100.5, 0.0, 0.1, frame(5), np.stack(first.actual), first.actual)
    assert demo.psnr_per_step([perfect], 3)["model"] == [demo.PSNR_CAP] * 3
    assert demo.psnr_per_step([perfect], 3)["copy_last_frame"][0] < 60


def test_percentiles():
    stats = demo.percentiles_ms([0.1] * 98 + [0.5, 1.0])
    assert stats == {"n": 100, "median": 100.0, "p90": 100.0, "p99": pytest.approx(505.0), "max": 1000.0}
    assert demo.percentiles_ms([])["median"] is None


@pytest.mark.skipif(not BUNDLED.is_file(), reason="the bundled recording is not there")
def test_demo_writes_video_strip_and_json(tmp_path, tiny_franka_checkpoint, capsys):
    out = tmp_path / "out" / "demo.json"
    args = ["--checkpoint", str(tiny_franka_checkpoint), "--seconds", "5", "--horizon", "3", "--out", str(out)]
    code = demo.main([*args, "--candidates", "2", "--progress", "2"])
    summary = json.loads(out.read_text())
    assert code == 0, summary
    stdout = capsys.readouterr().out
    assert "demo: replaying" in stdout
    assert f"wrote {out}" in stdout

    n = summary["predictions"]
    assert n >= 4, summary  # 5 s at 2 Hz, minus the first step and a loaded machine's slack
    assert summary["model"]["image_size"] == [16, 16]
    lat = summary["latency_ms"]["camera_to_prediction"]
    assert lat["n"] == n
    assert 0 < lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 10_000
    assert 0.5 < summary["prediction_rate_hz"] < 4
    assert summary["inputs"]["camera_messages"] >= 40  # 10 Hz
    assert summary["inputs"]["camera_frames_lost"] <= 5  # best-effort camera QoS on a loaded machine
    psnr = summary["psnr_db"]
    assert len(psnr["model"]) == 3
    assert psnr["pairs"][0] >= n - 2
    assert all(np.isfinite(psnr["model"]))
    assert all(np.isfinite(psnr["copy_last_frame"]))
    # A random model is far from the camera; the camera barely changes in 0.5 s.
    assert psnr["model"][0] < psnr["copy_last_frame"][0]
    assert summary["rollout"]["success"]
    assert summary["rollout"]["frames"] == 2 * 3

    outputs = summary["outputs"]
    video = read_video(out.with_suffix(".mp4"))
    w, h = outputs["video_size"]
    assert video.shape == (n, h + h % 2, w + w % 2, 3)
    assert outputs["video_frames"] == n
    assert h > 2 * 96
    assert w > 4 * 96
    strip = read_video(out.with_suffix(".png"))[0]
    assert strip.shape[1] == w
    assert strip.shape[0] > 3 * 96 * len(outputs["strip_ticks"])
    assert strip.std() > 10  # not a blank image


def test_missing_model_is_one_line_and_exit_1(tmp_path):
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    missing = tmp_path / "no_model"
    proc = subprocess.run(
        [sys.executable, "-m", "hma_ros.nodes.demo", "--checkpoint", str(missing), "--seconds", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"demo: error: model folder {missing} does not exist: pass --checkpoint DIR"], proc.stderr
