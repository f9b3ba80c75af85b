"""numpy <-> sensor_msgs conversions (no ROS graph needed, only the message types)."""

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")

from sensor_msgs.msg import Image, JointState

from hma_ros.nodes.convert import (
    ConversionError,
    image_to_numpy,
    joint_positions,
    numpy_to_image,
    sec_to_stamp,
    stamp_to_sec,
)
from hma_ros.runtime.image import ImageFormatError, fit_image


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_round_trip_is_exact(rgb, encoding):
    msg = numpy_to_image(rgb, encoding, frame_id="cam")
    channels = 4 if "a" in encoding[3:] else 3
    assert (msg.height, msg.width, msg.step) == (6, 10, 10 * channels)
    assert msg.encoding == encoding
    assert msg.header.frame_id == "cam"
    np.testing.assert_array_equal(image_to_numpy(msg), rgb)


def test_bgr_bytes_are_swapped(rgb):
    data = np.frombuffer(numpy_to_image(rgb, "bgr8").data, np.uint8).reshape(6, 10, 3)
    np.testing.assert_array_equal(data, rgb[..., ::-1])


def test_mono8_is_replicated_to_rgb():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = image_to_numpy(numpy_to_image(grey, "mono8"))
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


@pytest.mark.parametrize("encoding", ["rgb8", "bgra8", "mono8"])
def test_step_padding_is_skipped(rgb, encoding):
    msg = numpy_to_image(rgb, encoding)
    expected = image_to_numpy(msg)
    pad = 7
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    padded = np.concatenate([rows, np.full((msg.height, pad), 99, np.uint8)], axis=1)
    msg.step += pad
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(image_to_numpy(msg), expected)


def test_resize_goes_through_fit_image():
    img = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = image_to_numpy(numpy_to_image(img, "bgr8"), size=(16, 16))
    np.testing.assert_array_equal(out, fit_image(img, (16, 16)))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda m: setattr(m, "encoding", "16UC1"), "unsupported image encoding '16UC1'"),
        (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding"),
        (lambda m: setattr(m, "step", 5), "step=5"),
        (lambda m: setattr(m, "data", bytes(10)), "expected step\\*height"),
        (lambda m: setattr(m, "width", 0), "no pixels"),
        (lambda m: (setattr(m, "width", 100_000), setattr(m, "height", 100_000)), "larger than"),
    ],
)
def test_bad_images_are_refused_with_the_field_named(rgb, mutate, match):
    msg = numpy_to_image(rgb)
    mutate(msg)
    with pytest.raises(ImageFormatError, match=match):
        image_to_numpy(msg)


def test_numpy_to_image_refuses_wrong_input():
    with pytest.raises(ImageFormatError, match="uint8"):
        numpy_to_image(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ImageFormatError, match="unsupported"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "32FC1")
    assert isinstance(numpy_to_image(np.zeros((2, 2, 3), np.uint8)), Image)


def test_joint_positions_reorders_and_refuses():
    msg = JointState(name=["b", "a", "c"], position=[2.0, 1.0, 3.0])
    np.testing.assert_array_equal(joint_positions(msg, ["a", "b"]), [1.0, 2.0])
    with pytest.raises(ConversionError, match="lacks joints \\['d'\\]"):
        joint_positions(msg, ["a", "d"])
    with pytest.raises(ConversionError, match="non-finite positions for \\['b'\\]"):
        joint_positions(JointState(name=["a", "b"], position=[0.0, float("nan")]), ["a", "b"])
    np.testing.assert_array_equal(joint_positions(JointState(position=[4.0, 5.0]), ["a", "b"]), [4.0, 5.0])
    with pytest.raises(ConversionError, match="without names has 1"):
        joint_positions(JointState(position=[4.0]), ["a", "b"])


@pytest.mark.parametrize("t", [0.0, 1.5, 1700000000.123456789, 2.9999999999])
def test_stamp_round_trip(t):
    stamp = sec_to_stamp(t)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert abs(stamp_to_sec(stamp) - t) < 1e-6
