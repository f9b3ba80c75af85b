"""Tokenizers: shapes, exactness, FSQ ids, persistence and its failure modes, in-place tokenising."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

from hma_ros.data.format import EmbodimentDataset
from hma_ros.tokenizers import (
    JSON_NAME,
    WEIGHTS_NAME,
    FSQTokenizer,
    TokenizerLoadError,
    build_tokenizer,
    load_tokenizer,
    merge_factors,
    psnr_uint8,
    split_factors,
)
from hma_ros.tokenizers.tokenize_data import tokenize_folder
from hma_ros.train.tokenizer import synthetic_frames

torch.set_num_threads(1)

# Tiny configs: 32x32 frames, 4x4 grids, a few thousand parameters.
TINY = {
    "fsq": {"image_size": (32, 32), "channels": (8, 8, 16), "levels": (5, 4, 3, 2), "low_res_blocks": 1},
    "vae": {"image_size": (32, 32), "block_out_channels": (8, 8, 16), "latent_channels": 2},
    "pixels": {"image_size": (32, 32), "patch": 8},
}
GRID = (4, 4)


def tiny(type_name: str):
    torch.manual_seed(0)
    return build_tokenizer(type_name, **TINY[type_name]).eval()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return synthetic_frames(6, size=32, seed=1).reshape(2, 3, 32, 32, 3)


@pytest.mark.parametrize("type_name", sorted(TINY))
@pytest.mark.parametrize("as_tensor", [False, True])
def test_round_trip_shapes(type_name, as_tensor, frames):
    tok = tiny(type_name)
    x = torch.from_numpy(frames) if as_tensor else frames
    z = tok.encode(x)
    assert tok.grid == GRID
    if tok.kind == "discrete":
        assert z.dtype == torch.long
        assert z.shape == (2, 3, *GRID)
    else:
        assert z.dtype == torch.float32
        assert z.shape == (2, 3, *GRID, tok.token_dim)
    img = tok.decode(z)
    assert img.dtype == torch.uint8
    assert img.shape == frames.shape
    assert tok.decode(z.numpy()).equal(img)  # numpy input decodes the same
    assert tok.encode(frames[0, 0]).shape == z.shape[2:]  # a single frame, no batch dims


def test_shapes_described():
    assert tiny("fsq").vocab_factors == (20, 6)  # levels (5, 4 | 3, 2)
    assert tiny("vae").token_dim == 2 * 2 * 2  # latent channels x patch^2
    assert tiny("pixels").token_dim == 3 * 8 * 8
    fsq = FSQTokenizer()  # the shipped default: 64x64 -> 8x8, vocab 4096 = 64 x 64
    assert (fsq.image_size, fsq.grid, fsq.vocab_factors) == ((64, 64), (8, 8), (64, 64))
    vae = build_tokenizer("vae")  # 4x VAE + patch 2 -> also 8x8
    assert (vae.grid, vae.token_dim) == ((8, 8), 16)
    with pytest.raises(AttributeError):
        _ = fsq.token_dim


def test_pixels_exact(frames):
    tok = tiny("pixels")
    z = tok.encode(frames)
    assert z.min() >= -1
    assert z.max() <= 1
    assert np.array_equal(tok.decode(z).numpy(), frames)
    assert psnr_uint8(frames, tok.reconstruct(frames)) == 100.0


def test_fsq_ids_and_factors(frames):
    tok = tiny("fsq")
    ids = tok.encode(frames)
    assert ids.min() >= 0
    assert ids.max() < tok.vocab_size == 120
    # Every id decomposes into per-level digits, ravelled first-level-most-significant.
    all_ids = torch.arange(tok.vocab_size).view(1, 1, -1)
    codes = tok.quantizer.ids_to_codes(all_ids)  # (1, 4, 1, V)
    assert torch.equal(tok.quantizer.codes_to_ids(codes), all_ids)  # bijective
    digits = np.stack(np.unravel_index(all_ids.flatten().numpy(), tok.config.levels))
    half = np.array([lv // 2 for lv in tok.config.levels])[:, None]
    assert np.allclose(codes[0, :, 0].numpy(), (digits - half) / half)
    # Factor split agrees with grouping the levels: f0 from levels (5, 4), f1 from (3, 2).
    f = split_factors(ids, tok.vocab_factors)
    assert f.shape == (*ids.shape, 2)
    assert (f[..., 0] < 20).all()
    assert (f[..., 1] < 6).all()
    assert (f >= 0).all()
    d = np.stack(np.unravel_index(ids.numpy(), tok.config.levels))
    assert np.array_equal(f[..., 0].numpy(), d[0] * 4 + d[1])
    assert np.array_equal(f[..., 1].numpy(), d[2] * 2 + d[3])
    assert torch.equal(merge_factors(f, tok.vocab_factors), ids)


def test_fsq_straight_through_gradient():
    tok = tiny("fsq").train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon, codes = tok(x)
    recon.square().mean().backward()
    assert tok.encoder[0].weight.grad is not None
    assert tok.encoder[0].weight.grad.abs().sum() > 0
    assert codes.abs().max() <= 1.0


def test_chunking_is_invisible(frames):
    tok = tiny("vae")
    whole = tok.encode(frames)
    tok.chunk_size = 2
    assert torch.equal(tok.encode(frames), whole)
    assert torch.equal(tok.decode(whole), tiny("vae").decode(whole))


def test_bad_inputs_are_named(frames):
    tok = tiny("fsq")
    with pytest.raises(ValueError, match="uint8 frames"):
        tok.encode(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(\.\.\., 32, 32, 3\)"):
        tok.encode(np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 120\)"):
        tok.decode(torch.full((1, *GRID), 120))
    with pytest.raises(ValueError, match="integer ids"):
        tok.decode(torch.zeros(1, *GRID))


def test_vae_latents_normalised():
    tok = tiny("vae")
    x = torch.from_numpy(synthetic_frames(64, size=32, seed=2))
    tok.set_latent_stats(x)
    z = tok.encode(x)  # (B, h, w, c*p*p) with channel-major packing
    per_channel = z.reshape(-1, 2, 4).transpose(0, 1).reshape(2, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(2), atol=1e-4)
    assert torch.allclose(per_channel.std(1), torch.ones(2), atol=1e-3)


@pytest.mark.parametrize("type_name", sorted(TINY))
def test_save_load_bit_exact(type_name, frames, tmp_path):
    tok = tiny(type_name)
    tid = tok.save(tmp_path)
    meta = json.loads((tmp_path / JSON_NAME).read_text())
    assert meta["id"] == tid == tok.tokenizer_id
    assert meta["type"] == type_name
    assert meta["kind"] == tok.kind
    back = load_tokenizer(tmp_path)
    assert type(back) is type(tok)
    assert back.config == tok.config
    assert back.tokenizer_id == tid
    for k, v in tok.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    z = tok.encode(frames)
    assert torch.equal(back.encode(frames), z)
    assert torch.equal(back.decode(z), tok.decode(z))
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_id_tracks_weights():
    a, b = tiny("fsq"), tiny("fsq")
    assert a.tokenizer_id == b.tokenizer_id
    assert a.tokenizer_id.startswith("fsq-")
    with torch.no_grad():
        b.decoder[0].bias[0] += 1e-3
    assert a.tokenizer_id != b.tokenizer_id


def _corrupt_json(d):
    (d / JSON_NAME).write_text("{not json")


def _missing_weights(d):
    (d / WEIGHTS_NAME).unlink()


def _truncated_weights(d):
    data = (d / WEIGHTS_NAME).read_bytes()
    (d / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])


def _flipped_weight(d):
    data = bytearray((d / WEIGHTS_NAME).read_bytes())
    data[-3] ^= 0xFF  # a byte of the last tensor: still a valid file, wrong content
    (d / WEIGHTS_NAME).write_bytes(bytes(data))


def _unknown_field(d):
    meta = json.loads((d / JSON_NAME).read_text())
    meta["config"]["widht"] = 3
    (d / JSON_NAME).write_text(json.dumps(meta))


def _other_type(d):
    meta = json.loads((d / JSON_NAME).read_text())
    meta["type"] = "vqgan"
    (d / JSON_NAME).write_text(json.dumps(meta))


def _other_config(d):
    meta = json.loads((d / JSON_NAME).read_text())
    meta["config"]["channels"] = [8, 8, 24]
    (d / JSON_NAME).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / JSON_NAME).unlink(), "tokenizer.json is missing"),
        (_corrupt_json, "not valid JSON"),
        (_missing_weights, "tokenizer.safetensors is missing"),
        (_truncated_weights, "not a readable safetensors"),
        (_flipped_weight, "was changed, corrupted"),
        (_unknown_field, r"unknown FSQConfig fields \['widht'\]"),
        (_other_type, "unknown tokenizer type 'vqgan'"),
        (_other_config, "wrong shape"),
    ],
)
def test_load_names_what_is_wrong(damage, message, tmp_path):
    tiny("fsq").save(tmp_path)
    damage(tmp_path)
    with pytest.raises(TokenizerLoadError, match=message):
        load_tokenizer(tmp_path)


def test_load_missing_folder(tmp_path):
    with pytest.raises(TokenizerLoadError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")


def test_tokenize_folder_in_place(tmp_path):
    ds = EmbodimentDataset.create(tmp_path / "franka", "franka", action_dim=2, control_hz=4.0, image_size=(32, 32))
    x = synthetic_frames(10, size=32, seed=3)
    ds.append_episode(x[:6], np.zeros((6, 2), np.float32))
    ds.append_episode(x[6:], np.zeros((4, 2), np.float32))
    for type_name in ("fsq", "vae"):
        tok = tiny(type_name)
        path = tokenize_folder(ds.folder, tok, chunk=4)
        back = EmbodimentDataset.open(ds.folder)
        tokens = back.tokens(tok.tokenizer_id)  # what WindowDataset reads
        assert path == back.folder / back.tokenizers[tok.tokenizer_id]["file"]
        assert back.tokenizers[tok.tokenizer_id]["kind"] == tok.kind
        assert np.array_equal(tokens, tok.encode(x).numpy())
        mtime = path.stat().st_mtime_ns
        tokenize_folder(ds.folder, tok)  # same tokenizer again: skipped
        assert path.stat().st_mtime_ns == mtime
    assert len(EmbodimentDataset.open(ds.folder).tokenizers) == 2
    with pytest.raises(ValueError, match="expects"):
        tokenize_folder(ds.folder, build_tokenizer("pixels"))  # 64x64 tokenizer, 32x32 frames
