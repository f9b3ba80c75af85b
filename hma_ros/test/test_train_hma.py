"""Pre-training and post-training commands end to end on the real model and data layer.

Tiny on-disk datasets (16x16 frames, three embodiments at different rates and action
widths), an untrained 4x4-grid FSQ tokenizer and the ``hma_tiny`` preset keep each run to
seconds. ``arm`` is stored pre-tokenised, ``pusher`` and ``franka`` as frames (tokenised on
the fly), so both data paths train.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hma_ros.data.format import EmbodimentDataset
from hma_ros.model.checkpoint import load_model
from hma_ros.model.hma import HMA
from hma_ros.model.presets import make_config
from hma_ros.tokenizers import build_tokenizer
from hma_ros.train import checkpoint as ckpt
from hma_ros.train import posttrain, pretrain
from hma_ros.train.posttrain import TransferError, embodiment_prefixes, load_pretrained, owner

ROBOTS = {"arm": (3, 4.0), "pusher": (2, 2.0), "franka": (4, 4.0)}  # action_dim, control_hz
STEPS_PER_EPISODE = 8  # 2 Hz steps; hma_tiny windows are 6


def make_dataset(root: Path, name: str, episodes: int, seed: int) -> EmbodimentDataset:
    action_dim, hz = ROBOTS[name]
    stride = int(hz // 2)
    ds = EmbodimentDataset.create(root / name, name, action_dim, hz, image_size=(16, 16), frame_every=stride)
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        rows = STEPS_PER_EPISODE * stride
        actions = rng.normal(size=(rows, action_dim)).astype(np.float32)
        pos = np.cumsum(actions[::stride, :2], axis=0).astype(int) % 12  # a square the actions move
        frames = np.full((STEPS_PER_EPISODE, 16, 16, 3), 30, np.uint8)
        for t, (y, x) in enumerate(pos):
            frames[t, y : y + 4, x : x + 4] = (200, 80 + 40 * seed, 50)
        ds.append_episode(frames, actions)
    return ds


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Datasets under ``root``, a tokenizer folder, and a pre-trained checkpoint."""
    base = tmp_path_factory.mktemp("train_hma")
    torch.manual_seed(0)
    tok = build_tokenizer("fsq", image_size=[16, 16], channels=[8, 8], levels=[8, 8], low_res_blocks=0, groups=4)
    tok.save(base / "tokenizer")
    root = base / "data"
    for i, name in enumerate(ROBOTS):
        ds = make_dataset(root, name, episodes=4, seed=i)
        if name == "arm":
            ds.write_tokens(tok.tokenizer_id, tok.encode(ds.frames).numpy(), "discrete")
    args = [*common_args(base, "pretrain"), "data.embodiments=[arm, pusher]", "steps=4"]
    pretrain.main(args)
    return {"base": base, "root": root, "tokenizer": base / "tokenizer", "pre": base / "pretrain"}


def common_args(base: Path, out: str) -> list[str]:
    return [
        f"out_dir={base / out}",
        f"data.roots=[{base / 'data'}]",
        f"data.tokenizer={base / 'tokenizer'}",
        "data.batch_size=4",
        "data.eval_episodes=1",
        "model.preset=hma_tiny",
        "settings={forward_dynamics: 1, full: 1, video: 1, policy: 1}",
        "optim.warmup_steps=1",
        "optim.lr=3e-3",
        "log_every=1",
        "eval.every=2",
        "eval.batches=1",
        "eval.batch_size=2",
        "eval.hooks=[loss, psnr]",
        "checkpoint.every=2",
    ]


def test_pretrain_writes_model_checkpoints_and_logs(world):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = ckpt.latest_checkpoint(world["pre"])
    assert folder.name == "step_00000004"
    model = load_model(folder)  # the checkpoint alone rebuilds the model
    assert model.config.embodiment_names == ("arm", "pusher")
    assert model.config.tokens_h == 4
    assert model.config.vocab_factors == (8, 8)
    arm = model.config.embodiment("arm")
    stats = EmbodimentDataset.open(world["root"] / "arm").spec
    assert arm.action_mean == pytest.approx(stats.action_mean)  # statistics from the dataset metadata
    assert arm.action_std == pytest.approx(stats.action_std)
    info = ckpt.read_trainer_json(folder)
    assert info["kind"] == "pretrain"
    assert info["tokenizer"]["id"].startswith("fsq-")
    acc = EventAccumulator(str(world["pre"] / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("eval/loss/arm", "eval/loss/pusher/policy", "eval/psnr/arm", "eval/psnr/pusher", "train/lr"):
        assert tag in tags, sorted(tags)
    psnr = acc.Scalars("eval/psnr")[-1].value
    assert 0 < psnr < 100


def test_pretrain_resumes_bit_exact_after_losing_the_last_checkpoint(world, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(world["pre"], out)
    final = load_file(str(ckpt.step_folder(out, 4) / "model.safetensors"))
    shutil.rmtree(ckpt.step_folder(out, 4))  # the crash came before step 4's checkpoint
    args = [a for a in common_args(world["base"], "pretrain") if not a.startswith("out_dir=")]
    pretrain.main([f"out_dir={out}", *args, "data.embodiments=[arm, pusher]", "steps=4"])
    again = load_file(str(ckpt.step_folder(out, 4) / "model.safetensors"))
    assert final.keys() == again.keys()
    for k in final:
        assert torch.equal(final[k], again[k]), k
    # Running the finished command again changes nothing.
    pretrain.main([f"out_dir={out}", *args, "data.embodiments=[arm, pusher]", "steps=4"])
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [2, 4]


def test_posttrain_adds_franka_with_a_frozen_trunk(world, tmp_path):
    init = ckpt.latest_checkpoint(world["pre"])
    out = tmp_path / "post"
    args = [a for a in common_args(world["base"], "unused") if not a.startswith("out_dir=")]
    posttrain.main(
        [
            "--init",
            str(init),
            "--embodiment",
            str(world["root"] / "franka"),
            "--freeze-trunk",
            f"out_dir={out}",
            *args,
            "steps=3",
        ]
    )
    pre, post = load_model(init), load_model(ckpt.latest_checkpoint(out))
    assert post.config.embodiment_names == ("arm", "pusher", "franka")
    prefixes = embodiment_prefixes(post)
    pre_sd, post_sd = pre.state_dict(), post.state_dict()
    for k, v in post_sd.items():
        if owner(k, prefixes) in (None, "arm", "pusher"):  # frozen trunk; unused embodiments
            assert torch.equal(pre_sd[k], v), k
    changed = [k for k in post_sd if owner(k, prefixes) == "franka" and post_sd[k].abs().sum() > 0]
    assert any(k.startswith("stems.franka.") for k in changed)
    state = load_file(str(ckpt.latest_checkpoint(out) / ckpt.STATE_NAME))
    assert state  # only per-embodiment parameters are optimised
    assert all(owner(k.partition("/")[2], prefixes) is not None for k in state)


def test_posttrain_without_freezing_updates_the_trunk_and_can_replace_embodiments(world, tmp_path):
    init = ckpt.latest_checkpoint(world["pre"])
    out = tmp_path / "post"
    args = [a for a in common_args(world["base"], "unused") if not a.startswith("out_dir=")]
    posttrain.main(
        ["--init", str(init), "--embodiment", "franka", "--replace-embodiments", f"out_dir={out}", *args, "steps=2"]
    )
    post = load_model(ckpt.latest_checkpoint(out))
    assert post.config.embodiment_names == ("franka",)
    pre_sd = load_model(init).state_dict()
    assert not torch.equal(pre_sd["blocks.0.spatial.qkv.weight"], post.state_dict()["blocks.0.spatial.qkv.weight"])


def test_transfer_names_missing_unexpected_and_misshapen_keys():
    arm = make_config("hma_tiny", [{"name": "arm", "action_dim": 3, "control_hz": 4.0}])
    franka = make_config("hma_tiny", [{"name": "franka", "action_dim": 4, "control_hz": 4.0}])
    pre = HMA(arm)
    report = load_pretrained(HMA(franka), pre)
    assert report["dropped"]
    assert all(k.startswith(("stems.franka.", "action_heads.franka.")) or ".franka." in k for k in report["fresh"])
    with pytest.raises(TransferError, match=r"missing from the checkpoint: blocks.2"):
        load_pretrained(HMA(make_config("hma_tiny", franka.embodiments, depth=3)), pre)
    with pytest.raises(TransferError, match=r"unexpected in the checkpoint: blocks.1"):
        load_pretrained(HMA(make_config("hma_tiny", franka.embodiments, depth=1)), pre)
    with pytest.raises(TransferError, match=r"shape mismatch: .*checkpoint \(32,\) vs model \(64,\)"):
        load_pretrained(HMA(make_config("hma_tiny", franka.embodiments, dim=64)), pre)


def test_bad_commands_name_the_key(world, tmp_path):
    args = [a for a in common_args(world["base"], "unused") if not a.startswith("out_dir=")]
    with pytest.raises(SystemExit, match=r"data.embodiments: no dataset 'ghost'"):
        pretrain.main([f"out_dir={tmp_path}", *args, "data.embodiments=[arm, ghost]"])
    with pytest.raises(SystemExit, match=r"model.preset: unknown preset"):
        pretrain.main([f"out_dir={tmp_path}", *args, "data.embodiments=[arm]", "model.preset=huge"])
    changed = ["data.embodiments=[arm, pusher]", "steps=8", "model.overrides={depth: 3}"]
    with pytest.raises(SystemExit, match=r"cannot resume: .* model config differs"):
        pretrain.main([f"out_dir={world['pre']}", *args, *changed])  # its checkpoints have depth 2
    with pytest.raises(SystemExit, match=r"model.overrides.depth: cannot change the pre-trained architecture"):
        posttrain.main(
            [
                "--init",
                str(ckpt.latest_checkpoint(world["pre"])),
                "--embodiment",
                "franka",
                f"out_dir={tmp_path}",
                *args,
                "model.overrides={depth: 8}",
            ]
        )


DDP_SCRIPT = """
import sys, torch
from hma_ros.train import pretrain
from hma_ros.train.config import load_train_config
from hma_ros.train.distributed import init_distributed, shutdown_distributed
cfg = load_train_config(None, sys.argv[2:])
world = init_distributed("cpu")
trainer = pretrain.build_pretraining(cfg, world)
trainer.fit()
torch.save(trainer.model.state_dict(), sys.argv[1] + f"/rank{world.rank}.pt")
shutdown_distributed()
"""


def test_two_process_gloo_pretraining_keeps_ranks_in_sync(world, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    args = [a for a in common_args(world["base"], "unused") if not a.startswith("out_dir=")]
    args += [f"out_dir={out}", "data.embodiments=[arm, pusher]", "steps=3", "eval.hooks=[loss]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    # Own session: on a timeout the whole process group (torchrun and its workers) is killed.
    proc = subprocess.Popen(
        [*cmd, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the 2-process run did not finish in 240 s")
    assert proc.returncode == 0, stderr[-4000:]
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    folder = ckpt.latest_checkpoint(out)  # written by rank 0 only, for the last step
    assert folder.name == "step_00000003"
    assert ckpt.read_trainer_json(folder)["world_size"] == 2
    saved = load_file(str(folder / "model.safetensors"))
    assert all(torch.equal(saved[k], r0[k]) for k in saved)
    assert not torch.equal(
        saved["blocks.0.spatial.qkv.weight"],
        load_model(ckpt.step_folder(out, 2)).state_dict()["blocks.0.spatial.qkv.weight"],
    )


@pytest.mark.parametrize(
    "name", ["pretrain_small", "posttrain_franka", "ship_pretrain", "ship_posttrain_franka", "ship_scratch_franka"]
)
def test_shipped_training_configs_validate(name):
    from hma_ros.model.presets import PRESETS
    from hma_ros.paths import share_dir
    from hma_ros.train.config import load_train_config

    cfg = load_train_config(share_dir() / "config" / "train" / f"{name}.yaml")
    assert cfg.model.preset in PRESETS
    assert cfg.data.embodiments
    if "pretrain" in name:
        assert len(cfg.data.embodiments) >= 3
        assert "franka" not in cfg.data.embodiments  # franka is post-trained
    else:
        assert cfg.data.embodiments == ("franka",)


def test_benchmark_reports_throughput():
    from hma_ros.train import benchmark

    (r,) = benchmark.main(
        ["--preset", "hma_tiny", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--threads", "1"]
    )
    assert r["samples_per_s"] > 0
    assert r["steps_per_s"] == pytest.approx(r["samples_per_s"] / 2)
