"""The training loop (hma_ros.train): config, batches, schedule, checkpoints, resume.

A tiny stand-in world model (``TinyWorldModel``) keeps these tests about the loop: it has
the model's contract (``config.embodiments``, per-embodiment ``ModuleDict`` stems/heads,
``forward(batch) -> (loss, metrics)`` with random masking) and a checkpoint pair with the
model checkpoint module's signatures. The real model, data layer and a 2-process gloo run
are in test_train_hma.py.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hma_ros.data.windows import MixtureCollate
from hma_ros.model.config import EmbodimentSpec, HMAConfig
from hma_ros.train import checkpoint as ckpt
from hma_ros.train.batches import BatchPlanner, StepBatches
from hma_ros.train.config import ConfigError, TrainConfig, load_train_config
from hma_ros.train.optim import build_optimizer, lr_at
from hma_ros.train.trainer import Trainer

HERE = Path(__file__).resolve().parent
T, H, W, VOCAB = 4, 2, 2, 16


# ---- stand-ins ------------------------------------------------------------------------------------
class TinyWorldModel(nn.Module):
    """Masked token prediction with per-embodiment action stems and output heads."""

    def __init__(self, config: HMAConfig) -> None:
        super().__init__()
        self.config = config
        d = 8
        self.embed = nn.Embedding(VOCAB + 1, d)  # + mask id
        self.trunk = nn.Sequential(nn.Linear(d, 16), nn.GELU(), nn.Linear(16, d))
        self.stems = nn.ModuleDict({e.name: nn.Linear(e.step_action_dim, d) for e in config.embodiments})
        self.heads = nn.ModuleDict({e.name: nn.Linear(d, VOCAB) for e in config.embodiments})

    def forward(self, batch):
        tokens, actions = batch["tokens"], batch["actions"]  # (B,T,h,w), (B,T,A)
        e = self.config.embodiments[int(batch["embodiment"][0])]
        mask = torch.rand(tokens.shape, device=tokens.device) < 0.5  # global RNG: reseeded per step
        x = self.embed(torch.where(mask, VOCAB, tokens))  # (B,T,h,w,d)
        a = self.stems[e.name](actions[..., : e.step_action_dim])  # (B,T,d)
        x = self.trunk(x + a[:, :, None, None])
        logits = self.heads[e.name](x)  # (B,T,h,w,V)
        loss = nn.functional.cross_entropy(logits.flatten(0, -2), tokens.flatten(), reduction="none")
        loss = (loss * mask.flatten()).sum() / mask.sum().clamp_min(1)
        return loss, {"mask_ratio": mask.float().mean()}


def tiny_save(folder, model, extra=None):
    folder = Path(folder)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "extra.json").write_text(json.dumps(extra))


def tiny_load(folder):
    folder = Path(folder)
    model = TinyWorldModel(HMAConfig.from_dict(json.loads((folder / "config.json").read_text())))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model


class ListSource:
    """Random token windows of one embodiment."""

    def __init__(self, spec: EmbodimentSpec, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.spec = spec
        self.tokens = rng.integers(0, VOCAB, (n, T, H, W))
        self.actions = rng.normal(size=(n, T, spec.step_action_dim)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i):
        tokens, actions = torch.from_numpy(self.tokens[i]), torch.from_numpy(self.actions[i])
        return {"tokens": tokens, "actions": actions, "embodiment": self.spec.name}


SPECS = (
    EmbodimentSpec("arm", action_dim=3, control_hz=4.0),
    EmbodimentSpec("pusher", action_dim=2, control_hz=2.0),
)


def tiny_setup(out_dir, steps=6, world=None, **overrides):
    cfg = TrainConfig.from_dict(
        {
            "out_dir": str(out_dir),
            "steps": steps,
            "seed": 3,
            "log_every": 2,
            "data": {"roots": ["unused"], "embodiments": ["arm", "pusher"], "batch_size": 4},
            "optim": {"lr": 1e-2, "warmup_steps": 2, "min_lr": 1e-3},
            "eval": {"every": 3, "batches": 1, "batch_size": 2},
            "checkpoint": {"every": 3, "keep_last": 5},
            **overrides,
        }
    )
    torch.manual_seed(0)
    model = TinyWorldModel(HMAConfig(embodiments=SPECS))
    sources = {s.name: ListSource(s, 20 + 10 * i, i) for i, s in enumerate(SPECS)}
    evals = {s.name: ListSource(s, 4, 100 + i) for i, s in enumerate(SPECS)}
    return Trainer(cfg, model, sources, eval_sources=evals, dist=world)


@pytest.fixture
def stand_in_io(monkeypatch):
    monkeypatch.setattr(ckpt, "_model_checkpoint_io", lambda: (tiny_save, tiny_load))


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- config -------------------------------------------------------------------------------------
def test_config_errors_name_the_bad_key(tmp_path):
    base = ["data.roots=[/d]", "data.embodiments=[a]"]
    for override, key in [
        ("optim.lrr=1", "optim.lrr"),
        ("data.batch_size=0", "data.batch_size"),
        ("settings={teleport: 1}", "settings.teleport"),
        ("optim.betas=[0.9]", "optim.betas"),
        ("eval.every=often", "eval.every"),
        ("posttrain.freeze_trunk=maybe", "posttrain.freeze_trunk"),
    ]:
        with pytest.raises(ConfigError, match=f"^{key}:"):
            load_train_config(None, [*base, override])
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("data: {roots: /d, embodiments: [a, b]}\noptim: {lr: 3e-4}\n")
    cfg = load_train_config(yaml_file, ["optim.min_lr=1e-5", "settings={full: 3, video: 1}"])
    assert cfg.optim.lr == 3e-4  # YAML 1.1 reads 3e-4 as a string: coerced
    assert cfg.data.roots == ("/d",)
    assert cfg.settings_probs == {"full": 0.75, "video": 0.25}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_lr_warmup_then_cosine_to_min():
    cfg = TrainConfig.from_dict({"optim": {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 10}}).optim
    lrs = [lr_at(s, 110, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(1.0)
    assert all(b <= a for a, b in itertools.pairwise(lrs[10:]))
    assert lr_at(110, 110, cfg) == pytest.approx(0.1)
    assert lrs[60] == pytest.approx(0.55)  # half way down the cosine


# ---- batches -------------------------------------------------------------------------------------
def test_mixture_follows_cube_root_weights():
    planner = BatchPlanner({"a": 1000, "b": 8000}, {"full": 1.0}, batch_size=2, seed=0, temperature=1 / 3)
    picks = [planner.plan(s).embodiment for s in range(3000)]
    assert picks.count("b") / len(picks) == pytest.approx(2 / 3, abs=0.03)


def test_ranks_share_the_schedule_and_split_one_global_batch():
    kw = {"batch_size": 6, "seed": 1, "temperature": 1 / 3}
    single = BatchPlanner({"a": 50, "b": 9}, {"full": 1, "video": 1}, **kw)
    ranks = [BatchPlanner({"a": 50, "b": 9}, {"full": 1, "video": 1}, rank=r, world_size=3, **kw) for r in range(3)]
    for step in range(20):
        full = single.plan(step)
        parts = [p.plan(step) for p in ranks]
        assert {(p.embodiment, p.setting) for p in parts} == {(full.embodiment, full.setting)}
        assert sum((p.indices for p in parts), ()) == full.indices
    assert [single.plan(s) for s in range(5)] == [single.plan(s) for s in range(5)]  # pure in step
    with pytest.raises(ValueError, match="divisible"):
        BatchPlanner({"a": 5}, {"full": 1}, rank=0, world_size=4, **kw)


def test_worker_processes_keep_step_order():
    planner = BatchPlanner({"arm": 20, "pusher": 30}, {"full": 1}, batch_size=2, seed=0, temperature=0.3)
    sources = {s.name: ListSource(s, 20 + 10 * i, i) for i, s in enumerate(SPECS)}
    ds = StepBatches(planner, sources, MixtureCollate(HMAConfig(embodiments=SPECS)), start=3, stop=11)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = list(loader)
    assert [b["step"] for b in got] == list(range(3, 11))
    for b in got:
        ref = ds.batch(b["step"])
        assert torch.equal(b["tokens"], ref["tokens"])
        assert torch.equal(b["actions"], ref["actions"])
        assert b["actions"].shape[-1] == SPECS[int(b["embodiment"][0])].step_action_dim


# ---- checkpoints and resume ----------------------------------------------------------------------
def test_optimizer_state_round_trips_through_named_tensors():
    model = TinyWorldModel(HMAConfig(embodiments=SPECS))
    opt = build_optimizer(model, TrainConfig().optim)
    model(StepBatches(*_planner_and_sources(), start=0, stop=1).batch(0))[0].backward()
    opt.step()
    tensors, meta = ckpt.optimizer_to_tensors(model, opt)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert "exp_avg/trunk.0.weight" in tensors
    opt2 = build_optimizer(model, TrainConfig().optim)
    ckpt.load_optimizer_tensors(model, opt2, tensors, json.loads(json.dumps(meta)))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i, slots in a["state"].items():
        for k, v in slots.items():
            assert torch.equal(v, b["state"][i][k])


def _planner_and_sources():
    planner = BatchPlanner({"arm": 20, "pusher": 30}, {"full": 1}, batch_size=2, seed=0, temperature=0.3)
    sources = {s.name: ListSource(s, 20 + 10 * i, i) for i, s in enumerate(SPECS)}
    return planner, sources, MixtureCollate(HMAConfig(embodiments=SPECS))


def test_resume_after_crash_is_bit_exact(tmp_path, stand_in_io):
    straight = tiny_setup(tmp_path / "straight", steps=6)
    straight.fit()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "straight")] == [3, 6]

    _fit_until(tiny_setup(tmp_path / "crashed", steps=6), 3)  # same schedule, killed after step 3
    # A crash while writing the next checkpoint leaves a staging folder behind.
    stale = ckpt.checkpoint_dir(tmp_path / "crashed") / ".staging-step_00000006-999"
    stale.mkdir()
    (stale / "config.json").write_text("{")

    resumed = tiny_setup(tmp_path / "crashed", steps=6)
    assert resumed.resume() == 3
    assert not stale.exists()
    resumed.fit()
    a, b = weights(straight.model), weights(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    info = ckpt.read_trainer_json(ckpt.latest_checkpoint(tmp_path / "crashed"))
    assert info["step"] == 6
    assert info["train_config"]["seed"] == 3
    # Positive control: a different seed gives different weights.
    other = tiny_setup(tmp_path / "other", steps=6, seed=4)
    other.fit()
    assert not all(torch.equal(a[k], v) for k, v in weights(other.model).items())


def _fit_until(trainer: Trainer, stop: int) -> None:
    """Run the first ``stop`` steps of ``trainer``'s schedule, then stop as if killed."""
    original = ckpt.save_training_checkpoint
    calls = []

    def save_then_maybe_die(out_dir, step, *a, **kw):
        path = original(out_dir, step, *a, **kw)
        calls.append(step)
        if step >= stop:
            raise KeyboardInterrupt  # the process dies right after this checkpoint
        return path

    ckpt.save_training_checkpoint = save_then_maybe_die
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    finally:
        ckpt.save_training_checkpoint = original
    assert calls[-1] == stop


def test_checkpoint_folder_is_self_describing(tmp_path, stand_in_io):
    trainer = tiny_setup(tmp_path, steps=3, tensorboard=False)
    trainer.fit()
    folder = ckpt.latest_checkpoint(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "extra.json",
        "model.safetensors",
        "trainer.json",
        "trainer_state.safetensors",
    ]
    model = tiny_load(folder)  # the model checkpoint alone rebuilds the model
    for k, v in weights(trainer.model).items():
        assert torch.equal(model.state_dict()[k], v)
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "train_config.yaml").is_file()


def test_tensorboard_scalars_are_written(tmp_path, stand_in_io):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = tiny_setup(tmp_path, steps=4)
    last = trainer.fit()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/lr", "train/throughput/samples_per_s", "eval/loss/arm", "eval/loss/pusher"):
        assert tag in tags, sorted(tags)
    assert any(t.startswith("train/loss/") for t in tags)
    assert math.isfinite(last["loss"])
    assert last["throughput/samples_per_s"] > 0


def test_only_the_batch_embodiment_modules_move(tmp_path, stand_in_io):
    trainer = tiny_setup(tmp_path, steps=1, tensorboard=False, optim={"weight_decay": 0.5, "warmup_steps": 0})
    before = weights(trainer.model)
    trainer.fit()
    after = weights(trainer.model)
    trained = trainer._loader().planner.plan(0).embodiment  # the embodiment of step 0
    other = next(s.name for s in SPECS if s.name != trained)
    for k in before:
        moved = not torch.equal(before[k], after[k])
        if f".{other}." in f".{k}":
            assert not moved, k  # no gradient: no weight decay, no momentum step
        elif k.startswith(("trunk.", f"stems.{trained}.")):
            assert moved, k
