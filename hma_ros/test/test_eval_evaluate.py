"""The evaluation command on a tiny checkpoint and a dataset the test writes."""

import json
import shutil

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
    a = evaluate(ckpt, data, episodes="last:2", context=2, horizon=3, trials=2, progress=False, frechet=False)
    b = evaluate(ckpt, data, episodes="last:2", context=2, horizon=3, trials=2, progress=False, frechet=False)
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
    # Baselines and metrics side by side: copy-last-frame and the passive (action-free) model.
    for metric in ("psnr", "ssim", "lpips"):
        assert set(a[f"{metric}_per_step"]) == {"model", "copy_last_frame", "passive_model"}
        assert a[f"{metric}_per_step"] == b[f"{metric}_per_step"]
    assert all(0 <= v < 1.5 for v in a["lpips_per_step"]["model"])
    assert a["psnr_per_step"]["passive_model"] != a["psnr_per_step"]["model"]  # the actions matter
    assert "| LPIPS passive model |" in format_table(a)


def test_cli_writes_json_and_refuses_bad_input(setup, tmp_path):
    ckpt, data = setup
    out = tmp_path / "r.json"
    main(
        [
            str(ckpt),
            "--data",
            str(data),
            "--no-frechet",
            "--context",
            "2",
            "--horizon",
            "2",
            "--trials",
            "1",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["horizon"] == 2
    with pytest.raises(SystemExit, match="exceeds the model's window"):
        main([str(ckpt), "--data", str(data), "--no-frechet", "--context", "9"])
    with pytest.raises(SystemExit, match="no window"):
        main([str(ckpt), "--data", str(data), "--no-frechet", "--context", "4", "--horizon", "5"])


def test_report_has_table_curves_strips_and_videos(setup, tmp_path):
    """--report: a Markdown report whose every link resolves, curves, strips and decodable videos."""
    import re

    from PIL import Image

    from hma_ros.eval.video import read_video

    ckpt, data = setup
    out = tmp_path / "report"
    args = ["--context", "2", "--horizon", "3", "--trials", "1", "--episodes", "all"]
    args += ["--max-windows", "4", "--long-data", str(data), "--long-horizon", "5"]
    r = main([str(ckpt), "--data", str(data), *args, "--report", str(out), "--examples", "2"])
    text = (out / "report.md").read_text()
    for row in ("| PSNR model |", "| PSNR copy-last-frame |", "| SSIM model |", "dPSNR", "Perplexity ", "FID "):
        assert row in text
    assert "Long horizon: 3 episodes" in text
    # What could not be computed says why: 5-frame windows are too short for I3D, and random
    # frames have no simulator to re-simulate them.
    assert "FVD: windows of 5 frames; I3D needs at least 9" in text
    assert "PSNR*/perplexity*:" in text
    assert "not written by hma_ros.sim.generate" in text
    assert set(r["frechet"]["fid"]["scores"]) == {
        "model",
        "copy_last_frame",
        "passive_model",
        "tokenizer_reconstruction",
    }
    assert r["frechet"]["fid"]["samples"] == 4 * 3
    assert f"--report {out}" in text  # the command that made it
    assert json.loads((out / "report.json").read_text())["psnr_per_step"] == r["psnr_per_step"]
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert {"psnr_per_step.png", "ssim_per_step.png", "long_horizon_psnr.png", "long_horizon_ssim.png"} <= set(links)
    assert sum(link.endswith(".mp4") for link in links) == 2
    assert all((out / link).is_file() for link in links), links
    for link in links:
        if link.endswith(".mp4"):
            video = read_video(out / link)
            assert video.shape[0] == 3  # one frame per predicted step
            assert video.shape[-1] == 3
            assert video.mean() > 0
    strip = np.asarray(Image.open(out / links[-2]))
    assert strip.shape[0] > strip.shape[1] / 3  # four rows of cells


def test_examples_hold_the_frames_the_numbers_came_from(setup):
    from hma_ros.eval.metrics import psnr

    ckpt, data = setup
    kept = []
    r = evaluate(
        ckpt,
        data,
        episodes="all",
        context=2,
        horizon=3,
        trials=1,
        progress=False,
        examples=kept,
        num_examples=3,
        frechet=False,
    )
    assert len(kept) == 3
    assert len({ex["window"] for ex in kept}) == 3
    ex = kept[0]
    assert ex["truth"].shape == ex["pred"].shape == ex["random"].shape == (3, 32, 32, 3)
    assert ex["pred"].dtype == np.uint8
    frames = np.asarray(EmbodimentDataset.open(data).frames)
    np.testing.assert_array_equal(ex["truth"], frames[ex["window"] + 2 : ex["window"] + 5])  # window_step 1
    assert np.isfinite(float(psnr(torch.from_numpy(ex["pred"]), torch.from_numpy(ex["truth"])).mean()))
    assert r["windows"] >= 3


def test_baseline_checkpoints_sit_beside_the_model(setup, tmp_path):
    """--baseline NAME=CKPT (e.g. the recipe trained from scratch) on the same windows."""
    ckpt, data = setup
    torch.manual_seed(1)
    other = HMA(make_config("hma_tiny", [EmbodimentSpec("arm", 2, 4.0)], vocab_factors=(8, 8)))
    with torch.no_grad():  # zero-initialised heads would make any two tiny models predict alike
        for p in other.parameters():
            p.add_(0.2 * torch.randn_like(p))
    scratch = save_checkpoint(tmp_path / "scratch", other)
    shutil.copytree(ckpt / "tokenizer", scratch / "tokenizer")  # the same tokenizer
    base = ["--context", "2", "--horizon", "2", "--trials", "1", "--temperature", "0"]
    r = main([str(ckpt), "--data", str(data), "--no-frechet", *base, "--baseline", f"from_scratch={scratch}"])
    for metric in ("psnr", "ssim", "lpips"):
        assert set(r[f"{metric}_per_step"]) == {"model", "copy_last_frame", "passive_model", "from_scratch"}
    assert r["psnr_per_step"]["from_scratch"] != r["psnr_per_step"]["model"]  # other weights, other frames
    assert r["baselines"] == {"from_scratch": str(scratch)}
    assert "| PSNR from_scratch |" in format_table(r)
    # The model's own numbers do not move when a baseline is added (separate generators).
    alone = main([str(ckpt), "--data", str(data), "--no-frechet", *base])
    assert alone["psnr_per_step"]["model"] == r["psnr_per_step"]["model"]

    with pytest.raises(SystemExit, match="NAME=CHECKPOINT"):
        main([str(ckpt), "--data", str(data), "--no-frechet", *base, "--baseline", str(scratch)])
    with pytest.raises(SystemExit, match="is taken"):
        main([str(ckpt), "--data", str(data), "--no-frechet", *base, "--baseline", f"model={scratch}"])
    torch.manual_seed(5)
    foreign = save_checkpoint(tmp_path / "foreign", other)
    tiny_fsq().save(foreign / "tokenizer")  # other random weights: another tokenizer id
    with pytest.raises(SystemExit, match="uses tokenizer"):
        main([str(ckpt), "--data", str(data), "--no-frechet", *base, "--baseline", f"x={foreign}"])


@torch.no_grad()
def test_perplexity_is_the_teacher_forced_next_frame_likelihood():
    """next_frame_nll's one batched pass equals predicting each frame alone from the true
    frames before it, all its tokens masked; and it tracks the model's own logits."""
    from tiny_models import tiny_model

    from hma_ros.eval.likelihood import next_frame_nll
    from hma_ros.model.hma import factor_digits

    model, _ = tiny_model("discrete", [EmbodimentSpec("arm", 2, 4.0)])  # non-zero heads: logits vary
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 64, (6, 4, 4), generator=g)
    actions = torch.randn(6, 4, generator=g)  # (T, stride * A): control 4 Hz, stride 2, A 2
    nll = next_frame_nll(model, tokens, actions, "arm", first=2)
    assert nll.shape == (4,)
    for j, t in enumerate(range(2, 6)):
        prev = torch.cat([torch.full((1, 4), float("nan")), actions[:t]])[None]  # produced frames 0..t
        mask = torch.zeros(1, t + 1, 16, dtype=torch.bool)
        mask[0, t] = True
        out = model.outputs(tokens[None, : t + 1], prev, "arm", token_mask=mask)
        digits = factor_digits(tokens[t].flatten(), (8, 8))
        by_hand = sum(
            torch.nn.functional.cross_entropy(lg[0, t].double(), d, reduction="mean")
            for lg, d in zip(out["logits"], digits, strict=True)
        )
        assert float(nll[j]) == pytest.approx(float(by_hand), rel=1e-6)
    # Positive control: other actions give another likelihood.
    assert not torch.allclose(nll, next_frame_nll(model, tokens, actions + 3.0, "arm", first=2))
    with pytest.raises(ValueError, match="first"):
        next_frame_nll(model, tokens, actions, "arm", first=0)


def test_long_horizon_rollouts_and_their_errors(setup):
    from hma_ros.eval.evaluate import evaluate_long_horizon

    ckpt, data = setup
    r = evaluate_long_horizon(ckpt, data, context=2, horizon=6, temperature=0, progress=False)
    assert r["episodes"] == 3
    assert {k: len(v) for k, v in r["psnr_per_step"].items()} == {"model": 6, "copy_last_frame": 6, "passive_model": 6}
    # Copy-last-frame by hand: each episode's frame 1 against its frames 2..7.
    frames = np.asarray(EmbodimentDataset.open(data).frames, np.float64)
    mse = [((frames[e + 1] - frames[e + 2 + k]) ** 2).mean() for e in (0, 8, 16) for k in (0, 5)]
    by_hand = 10 * np.log10(255**2 / np.array(mse)).reshape(3, 2).mean(0)
    assert r["psnr_per_step"]["copy_last_frame"][0] == pytest.approx(by_hand[0], rel=1e-5)
    assert r["psnr_per_step"]["copy_last_frame"][5] == pytest.approx(by_hand[1], rel=1e-5)
    assert r == evaluate_long_horizon(ckpt, data, context=2, horizon=6, temperature=0, progress=False) | {
        "frames_per_s": r["frames_per_s"]
    }
    with pytest.raises(ValueError, match=r"sim\.generate --steps"):
        evaluate_long_horizon(ckpt, data, context=2, horizon=20, progress=False)


def test_frechet_sets_need_two_samples_and_say_so():
    """One window gives one FVD video: no covariance, so the report says why instead of failing
    after the whole run; FID (every frame a sample) still scores."""
    from hma_ros.eval.evaluate import FrechetSets
    from hma_ros.eval.metrics import FeatureStats

    sets = FrechetSets(12)
    rng = np.random.default_rng(0)
    for key in ("truth", "model"):
        fid, fvd = FeatureStats(2048), FeatureStats(400)
        fid.add(rng.normal(size=(8, 2048)))
        fvd.add(rng.normal(size=(1, 400)))
        sets.stats["fid"][key], sets.stats["fvd"][key] = fid, fvd
    out = sets.result()
    assert out["fid"]["samples"] == 8
    assert out["fid"]["scores"]["model"] > 0
    assert "a covariance needs 2" in out["fvd"]["skipped"]
    assert "FVD: 1 sample(s)" in format_table(
        {
            "embodiment": "arm",
            "windows": 1,
            "episodes": [0],
            "context": 4,
            "horizon": 8,
            "num_steps": 2,
            "temperature": 1.0,
            "dpsnr": {"value": 0, "psnr_true_actions_last": 0, "psnr_random_actions_last": 0, "trials": 1},
            "tokenizer_psnr_ceiling": 0,
            "frames_per_s": 1,
            "frechet": out,
        }
    )
