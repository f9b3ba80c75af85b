"""The ROS benchmark's --quick path: world_model in its own process, driven over DDS from this one
(live stream, concurrent rollout clients, throughput). Checks that it runs and writes plausible
JSON, not how fast anything is (STYLE.md 16)."""

import json

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("hma_ros_interfaces.msg")

from hma_ros.nodes import benchmark
from hma_ros.paths import share_dir

pytestmark = pytest.mark.ros


@pytest.mark.skipif(not (share_dir() / "data" / "franka_demo.mcap").is_file(), reason="no bundled recording")
def test_quick_benchmark_writes_json(tmp_path, tiny_franka_checkpoint):
    out = tmp_path / "benchmark_ros.json"
    code = benchmark.main(["--quick", "--checkpoint", str(tiny_franka_checkpoint), "--out", str(out)])
    result = json.loads(out.read_text())
    assert code == 0, result
    live = result["live"]
    assert live["predictions"] >= 1
    lat = live["camera_to_prediction_ms"]
    assert 0 < lat["median"] <= lat["p99"] <= lat["max"] < 10_000  # one clock, two processes
    assert live["node_cpu_percent"] > 0
    loaded = result["loaded"]
    assert loaded["clients"] == 2
    assert loaded["answers"] >= 2
    assert loaded["failures"] == 0, loaded["failure_messages"]
    assert set(result["met"]) == {"live_rate", "live_p50", "live_p99", "loaded_rate", "rollout_answers"}
    assert result["node_exit"]["code"] == 0
    assert [r["candidates"] for r in result["throughput"]] == [1, 8]
    for r in result["throughput"]:
        assert r["calls"] == 1
        assert r["frames_returned"] == r["candidates"] * r["horizon"]
        assert 0 < r["model_s"] <= r["round_trip_s"]
        assert np.isclose(r["frames_per_s"], r["candidates"] * r["horizon"] / r["round_trip_s"], rtol=0.01)


def test_missing_model_fails_before_starting_anything(tmp_path, capsys):
    code = benchmark.main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "b.json")])
    assert code == 1
    assert "benchmark: error: model folder" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
