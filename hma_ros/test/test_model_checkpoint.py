"""Checkpoints: the folder alone rebuilds a bit-identical model; writes are atomic; no pickle."""

import json

import pytest
import torch

from hma_ros.model import HMA, EmbodimentSpec, load_model, make_config, save_checkpoint
from hma_ros.model.checkpoint import load_extra

EMBS = (EmbodimentSpec("arm", 3, 6.0, action_std=(2.0, 0.5, 1.0)), EmbodimentSpec("pusher", 2, 4.0))


@pytest.mark.parametrize("variant", ["discrete", "continuous"])
def test_save_load_is_bit_exact(tmp_path, variant):
    torch.manual_seed(0)
    model = HMA(make_config("hma_tiny", EMBS, variant=variant)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder = save_checkpoint(tmp_path / "ckpt", model, extra={"step": 7})
    assert sorted(f.name for f in folder.iterdir()) == ["config.json", "extra.json", "model.safetensors"]
    loaded = load_model(folder)
    assert loaded.config == model.config
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k1 == k2
        assert torch.equal(v1, v2), k1
    assert load_extra(folder) == {"step": 7}
    x = torch.randint(0, 64, (1, 2, 4, 4)) if variant == "discrete" else torch.randn(1, 2, 4, 4, 4)
    args = (x, torch.randn(1, 2, 9), torch.randn(2, 1, 9), "arm")
    a = model.generate(*args, generator=torch.Generator().manual_seed(0))
    b = loaded.generate(*args, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.frames, b.frames)
    assert torch.equal(a.actions, b.actions)


def test_half_precision_weights_halve_the_file_and_load_as_float32(tmp_path):
    torch.manual_seed(0)
    model = HMA(make_config("hma_tiny", EMBS)).eval()
    full = save_checkpoint(tmp_path / "full", model)
    half = save_checkpoint(tmp_path / "half", model, weights_dtype=torch.float16)
    size = lambda f: (f / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    loaded = load_model(half)
    for (k, v), w in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert w.dtype == v.dtype, k
        assert torch.equal(w, v.half().to(v.dtype)), k  # exactly the fp16-rounded weights


def test_overwrite_replaces_and_leaves_no_temp(tmp_path):
    model = HMA(make_config("hma_tiny", EMBS))
    save_checkpoint(tmp_path / "ckpt", model)
    model2 = HMA(make_config("hma_tiny", EMBS, depth=1))
    save_checkpoint(tmp_path / "ckpt", model2)
    assert load_model(tmp_path / "ckpt").config.depth == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_bad_folders_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_model(tmp_path)
    folder = save_checkpoint(tmp_path / "ckpt", HMA(make_config("hma_tiny", EMBS)))
    meta = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        load_model(folder)
    meta["config"]["depth"] = 3  # weights no longer match the config
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(RuntimeError, match=r"blocks\.2"):
        load_model(folder)
