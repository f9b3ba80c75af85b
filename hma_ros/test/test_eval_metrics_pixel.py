"""PSNR, SSIM and dPSNR against closed-form values and scikit-image."""

import math

import numpy as np
import pytest
import torch

from hma_ros.eval.metrics import dpsnr, psnr, sample_normalized_random_actions, ssim
from hma_ros.eval.metrics.pixel import SSIM_K1, SSIM_K2, _gaussian_window


def _noisy_pair(shape, sigma=12.0, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a + rng.normal(0, sigma, shape), 0, 255).astype(np.uint8)
    return a, b


def test_psnr_closed_form():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = np.full((2, 8, 8, 3), 10, np.uint8)
    assert torch.allclose(psnr(a, b), torch.full((2,), 20 * math.log10(25.5), dtype=torch.float64))
    x = torch.full((4, 4, 3), 0.5)
    assert psnr(x, x + 0.1).item() == pytest.approx(20.0, abs=1e-4)  # MSE 0.01
    assert psnr(a, a).isinf().all()


def test_psnr_uint8_float_numpy_torch_agree():
    a, b = _noisy_pair((3, 16, 16, 3))
    ref = psnr(a, b)
    assert ref.shape == (3,)
    assert torch.allclose(psnr(torch.from_numpy(a), torch.from_numpy(b)), ref)
    assert torch.allclose(psnr(a.astype(np.float64) / 255, b.astype(np.float32) / 255), ref, atol=1e-4)


def test_float_frames_outside_unit_range_are_refused():
    x = np.full((8, 8, 3), 200.0, np.float32)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr(x, x)
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="H, W, 3"):
        ssim(np.zeros((16, 16, 4), np.uint8), np.zeros((16, 16, 4), np.uint8))


def test_ssim_identical_is_one_and_shape_kept():
    a, _ = _noisy_pair((2, 3, 20, 24, 3))
    out = ssim(a, a)
    assert out.shape == (2, 3)
    assert torch.allclose(out, torch.ones(2, 3, dtype=torch.float64), atol=1e-12)


def test_ssim_constant_images_closed_form():
    # Zero variance: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1), the luminance term alone.
    m1, m2 = 0.2, 0.6
    c1 = SSIM_K1**2
    expected = (2 * m1 * m2 + c1) / (m1**2 + m2**2 + c1)
    got = ssim(torch.full((16, 16, 3), m1, dtype=torch.float64), torch.full((16, 16, 3), m2, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_ssim_single_window_matches_published_formula():
    # An 11x11 image has exactly one valid window: evaluate Wang et al.'s formula by hand.
    rng = np.random.default_rng(3)
    x = rng.random((11, 11, 3))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    g = _gaussian_window(11, 1.5).numpy()
    w = np.outer(g, g)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    per_channel = []
    for ch in range(3):
        a, b = x[..., ch], y[..., ch]
        mu_a, mu_b = (w * a).sum(), (w * b).sum()
        var_a = (w * (a - mu_a) ** 2).sum()
        var_b = (w * (b - mu_b) ** 2).sum()
        cov = (w * (a - mu_a) * (b - mu_b)).sum()
        per_channel.append(
            ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        )
    assert ssim(x, y).item() == pytest.approx(np.mean(per_channel), rel=1e-9)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    a, b = _noisy_pair((3, 32, 40, 3), sigma=25.0, seed=1)
    ours = ssim(a, b)
    for i in range(3):
        ref = metrics.structural_similarity(
            a[i],
            b[i],
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1,
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-9)
        assert psnr(a[i], b[i]).item() == pytest.approx(
            metrics.peak_signal_noise_ratio(a[i], b[i], data_range=255), abs=1e-9
        )


def test_ssim_decreases_with_noise_and_refuses_tiny_frames():
    a, _ = _noisy_pair((16, 16, 3))
    values = [ssim(a, _noisy_pair((16, 16, 3), sigma=s, seed=0)[1]).item() for s in (2, 10, 40)]
    assert values[0] > values[1] > values[2]
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def test_dpsnr_uses_last_frame_and_averages_trials():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.uniform(0.2, 0.8, (4, 3, 12, 12, 3)))
    true_pred = gt.clone()
    true_pred[:, -1] += 0.01  # PSNR 40 dB on the last frame
    true_pred[:, :-1] = 0.0  # earlier frames must not matter
    randoms = []
    for offset in (0.1, 0.1 / math.sqrt(10)):  # 20 dB and 30 dB
        r = gt.clone()
        r[:, -1] += offset
        randoms.append(r)
    out = dpsnr(true_pred, randoms, gt)
    assert out.psnr_true == pytest.approx(40.0, abs=1e-6)
    assert out.psnr_random == pytest.approx(25.0, abs=1e-6)
    assert out.dpsnr == pytest.approx(15.0, abs=1e-6)
    assert out.per_sample.shape == (4,)
    # The same with numpy inputs and with the frames already selected.
    same = dpsnr(true_pred[:, -1].numpy(), [r[:, -1].numpy() for r in randoms], gt[:, -1].numpy(), time_axis=None)
    assert same.dpsnr == pytest.approx(out.dpsnr, abs=1e-9)
    with pytest.raises(ValueError, match="empty"):
        dpsnr(true_pred, [], gt)


def test_random_actions_are_standard_normal_in_normalised_space():
    mean = torch.tensor([1.0, -2.0, 0.0])
    std = torch.tensor([0.5, 3.0, 1.0])
    a = sample_normalized_random_actions((20000, 3), mean, std, generator=torch.Generator().manual_seed(0))
    z = (a - mean) / std
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=0.03)
    assert torch.allclose(z.std(0), torch.ones(3), atol=0.03)
    with pytest.raises(ValueError, match="do not match"):
        sample_normalized_random_actions((5, 4), mean, std)
