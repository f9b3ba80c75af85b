import numpy as np
import pytest

from hma_ros.runtime.image import fit_image


def test_area_downsample_is_block_mean():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = fit_image(img, (64, 64))
    expected = img.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-6


def test_center_crop_keeps_middle_of_wide_image():
    img = np.zeros((64, 128, 3), np.uint8)
    img[:, 32:96] = 200  # the central square
    out = fit_image(img, (32, 32))
    assert out.shape == (32, 32, 3)
    assert (out == 200).all()


def test_batch_dimensions_are_kept_and_identity_is_exact():
    img = np.arange(2 * 3 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 3, 8, 8, 3)
    assert np.array_equal(fit_image(img, (8, 8)), img)
    assert fit_image(img, (4, 4)).shape == (2, 3, 4, 4, 3)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.uint8)],
)
def test_bad_images_are_refused(bad):
    with pytest.raises(ValueError, match="expected"):
        fit_image(bad, (4, 4))


def _torch_fit(img, size):
    """The torch implementation fit_image had (and the shipped training frames went through)."""
    import torch
    import torch.nn.functional as F

    from hma_ros.runtime.image import center_crop_to_aspect

    img = center_crop_to_aspect(img, size)
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    if img.shape[0] >= size[0] and img.shape[1] >= size[1]:
        x = F.interpolate(x, size=size, mode="area")
    else:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()


def test_numpy_fit_equals_torch_area_exactly_and_bilinear_within_one():
    rng = np.random.default_rng(3)
    for _ in range(100):  # shrinking (area): bit-exact, any size and aspect ratio
        H, W = rng.integers(64, 300, 2)
        th, tw = rng.integers(1, 64, 2)
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        np.testing.assert_array_equal(fit_image(img, (int(th), int(tw))), _torch_fit(img, (int(th), int(tw))))
    for _ in range(100):  # enlarging (bilinear): within 1
        H, W = rng.integers(1, 40, 2)
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        diff = np.abs(fit_image(img, (64, 64)).astype(int) - _torch_fit(img, (64, 64)))
        assert diff.max() <= 1
