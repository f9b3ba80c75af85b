import json

import numpy as np
import pytest
import torch

from hma_ros.data.format import DatasetError, EmbodimentDataset, find_datasets
from hma_ros.data.windows import (
    MixtureCollate,
    MixtureDataset,
    MixtureSampler,
    WindowDataset,
    temperature_weights,
)
from hma_ros.model.config import EmbodimentSpec, HMAConfig


def _episode(rng, rows, action_dim, frame_every, size=(8, 8), ep=0):
    """Frames encode (episode, frame index) in pixel 0 so tests can check alignment."""
    frames = rng.integers(0, 256, (rows // frame_every, *size, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = ep
    frames[:, 0, 0, 1] = np.arange(rows // frame_every)
    actions = rng.normal(size=(rows, action_dim)).astype(np.float32)
    actions[:, 0] = np.arange(rows) + 1000 * ep  # row id within episode
    return frames, actions


def _make(tmp_path, name="arm", hz=8.0, action_dim=3, frame_every=2, lengths=(16, 24), seed=0):
    ds = EmbodimentDataset.create(
        tmp_path / name,
        name,
        action_dim,
        hz,
        image_size=(8, 8),
        frame_every=frame_every,
        action_names=[f"j{i}" for i in range(action_dim)],
    )
    rng = np.random.default_rng(seed)
    all_actions = []
    for ep, n in enumerate(lengths):
        f, a = _episode(rng, n, action_dim, frame_every, ep=ep)
        ds.append_episode(f, a, info={"success": bool(ep % 2)})
        all_actions.append(a)
    return ds, np.concatenate(all_actions) if all_actions else None


def test_roundtrip_and_stats(tmp_path):
    _ds, actions = _make(tmp_path)
    back = EmbodimentDataset.open(tmp_path / "arm")
    assert back.num_episodes == 2
    assert back.num_rows == 40
    assert back.num_frames == 20
    assert np.array_equal(back.actions, actions)
    assert back.episode.tolist() == [0] * 16 + [1] * 24
    np.testing.assert_allclose(back.spec.action_mean, actions.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back.spec.action_std, actions.std(0), rtol=1e-5)
    assert back.spec.action_names == ("j0", "j1", "j2")
    assert back.episode_info[1] == {"success": True}
    meta = json.loads((tmp_path / "arm" / "metadata.json").read_text())
    assert meta["arrays"]["frames"]["shape"] == [20, 8, 8, 3]
    assert find_datasets(tmp_path) == {"arm": tmp_path / "arm"}


def test_append_after_reopen_updates_stats(tmp_path):
    _, a0 = _make(tmp_path, lengths=(16,))
    ds = EmbodimentDataset.create(tmp_path / "arm", "arm", 3, 8.0, (8, 8), frame_every=2, exist_ok=True)
    f, a1 = _episode(np.random.default_rng(5), 8, 3, 2, ep=1)
    ds.append_episode(f, a1)
    back = EmbodimentDataset.open(tmp_path / "arm")
    both = np.concatenate([a0, a1])
    np.testing.assert_allclose(back.spec.action_std, both.std(0), rtol=1e-5)
    with pytest.raises(DatasetError, match="existing dataset"):
        EmbodimentDataset.create(tmp_path / "arm", "arm", 4, 8.0, (8, 8), frame_every=2, exist_ok=True)


def test_validation_messages(tmp_path):
    _make(tmp_path)
    folder = tmp_path / "arm"
    with open(folder / "actions.f32", "ab") as f:  # an interrupted append
        f.write(b"\0" * 12)
    with pytest.raises(DatasetError, match=r"actions of shape \(40, 3\)"):
        EmbodimentDataset.open(folder)
    EmbodimentDataset.open(folder, writable=True)  # repairs
    EmbodimentDataset.open(folder)

    a = np.memmap(folder / "actions.f32", np.float32, "r+", shape=(40, 3))
    a[7, 2] = np.nan
    a.flush()
    del a
    with pytest.raises(DatasetError, match=r"non-finite values .*row 7, dim 2"):
        EmbodimentDataset.open(folder)

    meta = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(DatasetError, match="format_version 99"):
        EmbodimentDataset.open(folder)
    (folder / "metadata.json").write_text(json.dumps(meta))
    (folder / "frames.u8").unlink()
    with pytest.raises(DatasetError, match=r"missing array file frames\.u8"):
        EmbodimentDataset.open(folder)
    with pytest.raises(DatasetError, match=r"missing metadata\.json"):
        EmbodimentDataset.open(tmp_path / "nothing")


def test_append_rejects_bad_episodes(tmp_path):
    ds, _ = _make(tmp_path, lengths=())
    f, a = _episode(np.random.default_rng(0), 8, 3, 2)
    with pytest.raises(DatasetError, match="frames must be uint8"):
        ds.append_episode(f[:-1], a)
    with pytest.raises(DatasetError, match="not a multiple of frame_every"):
        ds.append_episode(f, a[:-1])
    a[3, 1] = np.inf
    with pytest.raises(DatasetError, match="row 3"):
        ds.append_episode(f, a)
    with pytest.raises(DatasetError, match="divide the stride"):
        EmbodimentDataset.create(tmp_path / "x", "x", 2, 8.0, frame_every=3)


def test_windows_chunk_at_2hz_and_stay_in_episode(tmp_path):
    # 8 Hz -> stride 4; frames every 2 rows; T=3 windows need 12 rows.
    _make(tmp_path, lengths=(16, 24, 8))
    wd = WindowDataset(tmp_path / "arm", num_frames=3)
    # episode 0: starts 0,2,4 ; episode 1 (rows 16..39): 16..28 step 2 -> 7 ; episode 2 too short
    assert len(wd) == 3 + 7
    for i in range(len(wd)):
        item = wd[i]
        ep, r = item["episode"], item["start_row"]
        rows = item["actions"][:, 0::3]  # column 0 of every raw action in the step
        assert item["actions"].shape == (3, 4 * 3)
        assert (rows // 1000 == ep).all(), "window crossed an episode"
        local = r - (0 if ep == 0 else 16)
        expected = local + torch.arange(12).reshape(3, 4) + 1000 * ep
        assert torch.equal(rows, expected.float())
        # frame t is the one observed before the step's first action
        assert item["frames"][:, 0, 0, 1].tolist() == [(local + 4 * t) // 2 for t in range(3)]


def test_tokens_replace_frames_and_go_stale(tmp_path):
    ds, _ = _make(tmp_path)
    tok = np.arange(20 * 2 * 2, dtype=np.int32).reshape(20, 2, 2)
    ds.write_tokens("vq-test", tok)
    wd = WindowDataset(tmp_path / "arm", num_frames=2, tokenizer_id="vq-test")
    item = wd[0]
    assert "frames" not in item
    assert item["tokens"].dtype == torch.int64
    assert item["tokens"][1].flatten().tolist() == tok[2].flatten().tolist()  # stride 4 / frame_every 2
    ds.write_tokens("vae", np.zeros((20, 2, 2, 4), np.float32), kind="continuous")
    assert WindowDataset(tmp_path / "arm", 2, tokenizer_id="vae")[0]["latents"].shape == (2, 2, 2, 4)
    f, a = _episode(np.random.default_rng(1), 8, 3, 2)
    ds.append_episode(f, a)
    with pytest.raises(DatasetError, match="re-run the tokenizer"):
        WindowDataset(tmp_path / "arm", 2, tokenizer_id="vq-test")


def test_temperature_weights_follow_cube_root():
    w = temperature_weights([1000, 8000, 0])
    np.testing.assert_allclose(w, [10 / 30, 20 / 30, 0])


def test_mixture_sampler_and_collate(tmp_path):
    _make(tmp_path, name="a", hz=8.0, action_dim=3, lengths=(16, 16))
    _make(tmp_path, name="b", hz=4.0, action_dim=2, frame_every=1, lengths=(40,))
    mix = MixtureDataset.from_root(tmp_path, num_frames=3)
    assert mix.names == ["a", "b"]
    sampler = MixtureSampler(mix, batch_size=4, num_batches=50, seed=3)
    batches = list(sampler)
    assert batches == list(MixtureSampler(mix, batch_size=4, num_batches=50, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    names = [{mix[i]["embodiment"] for i in b} for b in batches]
    assert all(len(n) == 1 for n in names), "one embodiment per batch"
    assert {next(iter(n)) for n in names} == {"a", "b"}
    mixed = list(MixtureSampler(mix, batch_size=8, num_batches=20, mixed=True, seed=0))
    assert any(len({mix[i]["embodiment"] for i in b}) == 2 for b in mixed)
    shards = [list(MixtureSampler(mix, 4, 10, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert shards[0] + shards[1] != []
    assert not set(map(tuple, shards[0])) & set(map(tuple, shards[1]))

    config = HMAConfig(embodiments=(EmbodimentSpec("b", 2, 4.0), EmbodimentSpec("a", 3, 8.0)))
    batch = MixtureCollate(config)([mix[0], mix[len(mix) - 1]])
    assert batch["embodiment"].tolist() == [1, 0]
    assert batch["actions"].shape == (2, 3, 12)
    assert batch["frames"].shape == (2, 3, 8, 8, 3)
    assert (batch["actions"][1, :, 4:] == 0).all()
    wrong = HMAConfig(embodiments=(EmbodimentSpec("a", 3, 4.0), EmbodimentSpec("b", 2, 4.0)))
    with pytest.raises(ValueError, match="expects 6"):
        MixtureCollate(wrong)([mix[0]])
