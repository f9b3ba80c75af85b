"""hma_ros.eval.video: labelled grids, H.264 videos and PNGs that decode back to what went in."""

import numpy as np
import pytest

pytest.importorskip("av")

from hma_ros.eval.video import (
    BACKGROUND,
    MISSING,
    abs_diff,
    grid,
    read_video,
    stack,
    write_png,
    write_video,
)


def moving_square(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Smooth frames (a gradient) with a bright square moving right: what cameras show, not noise."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 80)], -1).astype(np.uint8)
    frames = np.repeat(base[None], n, 0)
    for i in range(n):
        frames[i, 10:26, 4 + 4 * i : 20 + 4 * i] = (250, 250, 40)
    return frames


def test_video_round_trip(tmp_path):
    frames = moving_square(10)
    path = tmp_path / "sub" / "v.mp4"
    assert write_video(path, frames, fps=2) == 10
    back = read_video(path)
    assert back.shape == frames.shape
    err = np.abs(back.astype(int) - frames.astype(int)).mean(axis=(1, 2, 3))
    assert err.max() < 3.5, err  # crf 18 is visually lossless; yuv420p halves the chroma resolution
    # Positive control: each decoded frame is far closer to its own input than to the next one.
    other = np.abs(back[:-1].astype(int) - frames[1:].astype(int)).mean(axis=(1, 2, 3))
    assert (other > 2 * err[:-1]).all(), (other, err)
    assert [p.name for p in path.parent.iterdir()] == ["v.mp4"]  # no partial file left


def test_video_odd_size_is_padded_and_sizes_must_agree(tmp_path):
    frames = moving_square(3, h=33, w=47)
    write_video(tmp_path / "odd.mp4", frames)
    back = read_video(tmp_path / "odd.mp4")
    assert back.shape == (3, 34, 48, 3)
    assert np.abs(back[:, :33, :47].astype(int) - frames.astype(int)).mean() < 3.5
    with pytest.raises(ValueError, match=r"frame 1 is \(50, 64\)"):
        write_video(tmp_path / "bad.mp4", [moving_square(1)[0], moving_square(1, h=50)[0]])
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_video(tmp_path / "float.mp4", [np.zeros((8, 8, 3), np.float32)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


def test_png_is_lossless(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    back = read_video(write_png(tmp_path / "a.png", img))
    assert back.shape == (1, 37, 53, 3)
    np.testing.assert_array_equal(back[0], img)


def test_grid_places_enlarged_cells_and_marks_missing_ones():
    a = np.full((16, 16, 3), 200, np.uint8)
    b = np.zeros((16, 16, 3), np.uint8)
    b[0, 0] = (255, 0, 0)
    img = grid([[a, b], [None, a]], pad=4)  # no labels: cells start at (pad, pad), 6x enlarged
    assert img.shape == (4 + 2 * (96 + 4), 4 + 2 * (96 + 4), 3)
    assert (img[4:100, 4:100] == 200).all()
    assert (img[4:10, 104:110] == (255, 0, 0)).all()
    assert (img[4:10, 110:116] == 0).all()
    assert (img[104:200, 4:100] == MISSING).all()
    assert (img[0:4] == BACKGROUND).all()
    labelled = grid([[a, b], [None, a]], row_labels=["actual", "predicted"], col_labels=["+0.5s", "+1s"], title="t")
    assert labelled.shape[0] > img.shape[0]
    assert labelled.shape[1] > img.shape[1]
    with pytest.raises(ValueError, match="2 row labels for 1 rows"):
        grid([[a]], row_labels=["x", "y"])
    with pytest.raises(ValueError, match="rectangle"):
        grid([[a, a], [a]])
    with pytest.raises(ValueError, match="integer factor"):
        grid([[a, np.zeros((10, 10, 3), np.uint8)]])


def test_abs_diff_and_stack():
    a = np.full((4, 4, 3), 10, np.uint8)
    b = np.full((4, 4, 3), 250, np.uint8)
    assert (abs_diff(a, b) == 240).all()
    assert (abs_diff(b, a) == 240).all()
    with pytest.raises(ValueError, match="same-shaped"):
        abs_diff(a, b[:2])
    s = stack([a, np.zeros((2, 6, 3), np.uint8)], pad=1)
    assert s.shape == (4 + 1 + 2, 6, 3)
    assert (s[:4, :4] == 10).all()
    assert (s[:4, 4:] == BACKGROUND).all()
