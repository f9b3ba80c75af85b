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
