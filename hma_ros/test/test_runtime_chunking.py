import numpy as np
import pytest

from hma_ros.runtime.chunking import StepAssembler


def feed_ramp(asm, t0, t1, hz):
    """Raw action k = [k, -k] at time k / hz."""
    for k in range(int(round(t0 * hz)), int(round(t1 * hz))):
        asm.add_action(np.array([k, -k], np.float32), k / hz)


def test_step_action_is_zero_order_hold_on_control_grid():
    asm = StepAssembler(action_dim=2, control_hz=20.0)
    assert asm.stride == 10
    feed_ramp(asm, 0.0, 1.2, 20.0)
    asm.add_frame(np.zeros((4, 4, 3), np.uint8), 0.49)
    first = asm.tick(0.5)
    assert first is not None
    assert first.action_before is None
    asm.add_frame(np.ones((4, 4, 3), np.uint8), 0.99)
    step = asm.tick(1.0)
    # control instants 0.5, 0.55, ..., 0.95 -> raw actions 10..19
    expected = np.stack([np.arange(10, 20), -np.arange(10, 20)], axis=1).reshape(-1)
    np.testing.assert_array_equal(step.action_before, expected)
    assert step.frame.mean() == 1


def test_jittered_stream_holds_last_command():
    asm = StepAssembler(action_dim=1, control_hz=4.0)  # stride 2
    asm.add_action(np.array([1.0]), 0.0)
    asm.add_action(np.array([2.0]), 0.30)  # arrives late: 0.25 still sees 1.0
    asm.add_frame(np.zeros((2, 2, 3), np.uint8), 0.0)
    asm.tick(0.0)
    asm.add_frame(np.zeros((2, 2, 3), np.uint8), 0.5)
    np.testing.assert_array_equal(asm.tick(0.5).action_before, [1.0, 1.0])


def test_stale_frame_gives_no_step_and_is_counted():
    asm = StepAssembler(action_dim=1, control_hz=2.0, max_frame_age=0.1)
    asm.add_action(np.array([0.0]), 0.0)
    asm.add_frame(np.zeros((2, 2, 3), np.uint8), 0.0)
    assert asm.tick(0.5) is None
    assert asm.stats.ticks_without_frame == 1


def test_unused_frames_are_counted_as_dropped():
    asm = StepAssembler(action_dim=1, control_hz=2.0)
    asm.add_action(np.zeros(1), 0.0)
    for i in range(3):
        asm.add_frame(np.full((2, 2, 3), i, np.uint8), i * 0.1)
    assert asm.stats.frames_dropped == 0  # buffered: a step may still want them
    assert asm.tick(0.2).frame[0, 0, 0] == 2
    assert asm.stats.frames_dropped == 2


def test_tick_takes_the_newest_frame_at_or_before_its_stamp():
    """Frames that arrived after the step's time stay buffered for the next step."""
    asm = StepAssembler(action_dim=1, control_hz=2.0)
    for i in range(8):
        asm.add_frame(np.full((2, 2, 3), i, np.uint8), i * 0.1)
    assert asm.next_frame_stamp() == 0.0
    assert asm.newest_frame_stamp == pytest.approx(0.7)
    assert asm.newest_covered_frame_stamp() is None  # commands known up to 0.0 only
    asm.add_action(np.zeros(1), 0.0)
    asm.add_action(np.zeros(1), 0.4)
    assert asm.newest_covered_frame_stamp() == pytest.approx(0.7)  # 2 Hz control: 0.4 reaches 0.9
    assert asm.next_frame_stamp(0.25) == pytest.approx(0.3)
    assert asm.next_frame_stamp(0.75) is None
    assert asm.tick(0.3).frame[0, 0, 0] == 3
    assert asm.next_frame_stamp(0.0) == pytest.approx(0.4)
    assert asm.tick(0.7).frame[0, 0, 0] == 7


def test_actions_cover_waits_for_the_last_control_instant():
    asm = StepAssembler(action_dim=2, control_hz=20.0)
    assert not asm.actions_cover(1.0)
    feed_ramp(asm, 0.0, 0.9, 20.0)  # newest command at 0.85
    assert asm.newest_action_stamp == pytest.approx(0.85)
    assert not asm.actions_cover(1.0)  # the command in force at 0.95 is not known yet
    asm.add_action(np.zeros(2), 0.95)
    assert asm.actions_cover(1.0)


def test_frame_buffer_is_bounded_in_time():
    asm = StepAssembler(action_dim=1, control_hz=2.0, frame_buffer_s=1.05)
    for i in range(30):
        asm.add_frame(np.zeros((2, 2, 3), np.uint8), i * 0.1)
    assert asm.next_frame_stamp() == pytest.approx(1.9)  # the oldest within 1.05 s of 2.9
    assert asm.stats.frames_dropped == 19


def test_out_of_order_frame_is_refused():
    asm = StepAssembler(action_dim=1, control_hz=2.0)
    asm.add_frame(np.zeros((2, 2, 3), np.uint8), 1.0)
    with pytest.raises(ValueError, match="older"):
        asm.add_frame(np.zeros((2, 2, 3), np.uint8), 0.5)
    assert asm.stats.frames_in == 1


@pytest.mark.parametrize(
    ("action", "stamp", "match"),
    [
        (np.zeros(3), 1.0, "3 values, expected 2"),
        (np.array([0.0, np.nan]), 1.0, "NaN"),
        (np.zeros(2), float("nan"), "finite"),
    ],
)
def test_bad_actions_are_refused_and_counted(action, stamp, match):
    asm = StepAssembler(action_dim=2, control_hz=20.0)
    with pytest.raises(ValueError, match=match):
        asm.add_action(action, stamp)
    assert asm.stats.actions_rejected == 1
    assert asm.stats.actions_in == 0


def test_out_of_order_action_is_refused():
    asm = StepAssembler(action_dim=1, control_hz=2.0)
    asm.add_action(np.zeros(1), 1.0)
    with pytest.raises(ValueError, match="older"):
        asm.add_action(np.zeros(1), 0.5)


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match="multiple"):
        StepAssembler(action_dim=1, control_hz=15.0)
