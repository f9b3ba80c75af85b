"""The evaluation command on a tiny checkpoint and a dataset the test writes."""

import json

import numpy as np
import pytest
import torch
from tiny_models import tiny_fsq

from hma_ros.data.format import EmbodimentDataset
from hma_ros.eval.evaluate import evaluate, format_table, main, select_episodes
from hma_ros.model.checkpoint import save_checkpoint
from hma_ros.model.config import EmbodimentSpec
from hma_ros.model.hma import HMA
from hma_ros.model.presets import make_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    ds = EmbodimentDataset.create(
        tmp / "data" / "arm", "arm", action_dim=2, control_hz=4.0, image_size=(32, 32), frame_every=2
    )
    for _ in range(3):
        ds.append_episode(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), rng.normal(size=(16, 2)))
    torch.manual_seed(0)
    spec = EmbodimentSpec("arm", 2, 4.0)
    model = HMA(make_config("hma_tiny", [spec], vocab_factors=(8, 8)))
    ckpt = save_checkpoint(tmp / "ckpt", model)
    tiny_fsq().save(ckpt / "tokenizer")
    return ckpt, tmp / "data" / "arm"


def test_select_episodes():
    assert select_episodes("last:2", 5) == [3, 4]
    assert select_episodes("first:2", 5) == [0, 1]
    assert select_episodes("all", 3) == [0, 1, 2]
    assert select_episodes("1,3", 5) == [1, 3]
    with pytest.raises(ValueError, match="out of range"):
        select_episodes("7", 5)
    with pytest.raises(ValueError, match="comma list"):
        select_episodes("latest", 5)


def test_numbers_have_the_right_shape_and_are_reproducible(setup):
    ckpt, data = setup
    a = evaluate(ckpt, data, episodes="last:2", context=2, horizon=3, trials=2, progress=False)
    b = evaluate(ckpt, data, episodes="last:2", context=2, horizon=3, trials=2, progress=False)
    assert a["windows"] == 2 * (8 - 5 + 1)
    assert len(a["psnr_per_step"]["model"]) == 3
    assert a["psnr_per_step"] == b["psnr_per_step"]
    assert a["dpsnr"] == b["dpsnr"]
    # Copy-last-frame from the data alone, by hand: episodes 1 and 2 hold frames 8..15 and
    # 16..23; a window starts at every frame, its context is frames s, s+1, its first target s+2.
    frames = np.asarray(EmbodimentDataset.open(data).frames, np.float64)
    starts = [s for e in (8, 16) for s in range(e, e + 4)]
    by_hand = np.mean([10 * np.log10(255**2 / ((frames[s + 1] - frames[s + 2]) ** 2).mean()) for s in starts])
    assert a["psnr_per_step"]["copy_last_frame"][0] == pytest.approx(by_hand, rel=1e-5)
    assert np.isfinite(a["dpsnr"]["value"])
    assert "dPSNR" in format_table(a)


def test_cli_writes_json_and_refuses_bad_input(setup, tmp_path):
    ckpt, data = setup
    out = tmp_path / "r.json"
    main([str(ckpt), "--data", str(data), "--context", "2", "--horizon", "2", "--trials", "1", "--out", str(out)])
    assert json.loads(out.read_text())["horizon"] == 2
    with pytest.raises(SystemExit, match="exceeds the model's window"):
        main([str(ckpt), "--data", str(data), "--context", "9"])
    with pytest.raises(SystemExit, match="no window"):
        main([str(ckpt), "--data", str(data), "--context", "4", "--horizon", "5"])
