"""StepCutter: live camera frames and raw actions in, 2 Hz steps out (what the node's
subscriptions do, without ROS or real time)."""

import contextlib

import numpy as np
import pytest

from hma_ros.runtime.chunking import StepCutter

A, HZ = 2, 20.0  # stride 10
T0 = 1000.0


def frame(value):
    return np.full((4, 4, 3), value, np.uint8)


def stream(cutter, seconds, *, t0=T0, image_until=None, command_lag=0, command_until=None, camera_every=2):
    """20 Hz ticks: a frame every ``camera_every`` ticks (value = tick), a ramp command (value =
    its tick) ``command_lag`` ticks behind; returns the steps cut, in order."""
    steps = []
    for i in range(int(seconds * HZ)):
        t = t0 + i / HZ
        if i % camera_every == 0 and (image_until is None or i / HZ < image_until):
            steps += cutter.add_frame(frame(i % 256), t)
        k = i - command_lag
        if k >= 0 and (command_until is None or k / HZ < command_until):
            steps += cutter.add_action(np.full(A, float(k), np.float32), t0 + k / HZ)
    return steps


def test_steps_every_half_second_on_the_camera_time_base():
    c = StepCutter(A, HZ)
    steps = stream(c, 3.0)
    stamps = np.array([s.stamp for s in steps])
    np.testing.assert_allclose(np.diff(stamps), 0.5, atol=1e-9)
    assert steps[0].action_before is None  # the first step starts the context
    for s in steps[1:]:
        ramp = s.action_before.reshape(10, A)[:, 0]  # the ten commands executed since the last step
        np.testing.assert_array_equal(ramp, np.arange(10) + (s.stamp - T0) * HZ - 10)
    assert c.stats.steps == len(steps)
    assert c.last_step_stamp == stamps[-1]


def test_lagging_actions_delay_steps_instead_of_holding_stale_commands():
    """Commands 1.5 s behind the camera (a backed-up reliable queue) are no time jump: steps wait
    for their actions and carry the commands really executed."""
    c = StepCutter(A, HZ)
    steps = stream(c, 4.5, image_until=3.0, command_lag=30)
    assert len(steps) >= 5
    assert c.stats.time_resets == 0
    assert c.stats.steps_actions_held == 0
    for s in steps[1:]:
        np.testing.assert_array_equal(np.diff(s.action_before.reshape(10, A)[:, 0]), np.ones(9))
    np.testing.assert_allclose(np.diff([s.stamp for s in steps]), 0.5, atol=1e-9)


def test_silent_command_topic_holds_the_last_command_after_max_action_wait():
    c = StepCutter(A, HZ, max_action_wait=0.5)
    steps = stream(c, 3.0, command_until=0.6)
    assert c.stats.steps_actions_held >= 2
    held = [s.action_before.reshape(10, A)[:, 0] for s in steps if s.action_before is not None and s.stamp >= T0 + 1.05]
    assert len(held) >= 2
    assert all((a == 11.0).all() for a in held)  # the last command (tick 11 at 0.55 s), held


def test_a_looped_recording_restarts_once_and_ignores_the_old_timelines_stragglers():
    lines = []
    c = StepCutter(A, HZ, on_time_jump=lines.append)
    first = stream(c, 2.0)
    # The camera loops first; four commands of the old timeline are still in flight.
    steps = c.add_frame(frame(1), T0)
    for k in range(40, 44):
        steps += c.add_action(np.zeros(A, np.float32), T0 + k / HZ)
    assert c.stats.stale_after_reset == 4
    steps += stream(c, 2.0)  # the new pass, same stamps again
    assert c.stats.time_resets == 1, lines  # not a second reset when the commands loop too
    assert len(lines) == 1
    assert "camera time jumped back" in lines[0]
    assert first
    assert steps
    assert steps[0].action_before is None  # a new context
    np.testing.assert_allclose(np.diff([s.stamp for s in steps]), 0.5, atol=1e-9)


@pytest.mark.parametrize("topic", ["camera", "action"])
@pytest.mark.parametrize("bad_stamp", [T0 + 2.0 - 3600.0, T0 + 1e6])
def test_one_bad_stamp_on_one_topic_costs_one_context_not_the_stream(topic, bad_stamp):
    """A single message stamped an hour back or far ahead (a driver glitch, a bad header) while
    both streams go on at the true time: the context restarts, and the other topic, which never
    jumped, is taken again as soon as the jumped topic is back on the true clock (it used to be
    ignored for good, and the node stopped predicting)."""
    lines = []
    c = StepCutter(A, HZ, on_time_jump=lines.append)
    before = stream(c, 2.0)
    if topic == "camera":
        c.add_frame(frame(7), bad_stamp)
    else:
        c.add_action(np.zeros(A, np.float32), bad_stamp)
    after = stream(c, 3.0, t0=T0 + 2.0)
    assert before
    assert c.stats.time_resets == 1, lines
    assert len(after) >= 5, (c.stats, lines)
    assert [s.action_before is None for s in after].count(True) == 1  # one new context, then steps
    assert after[-1].action_before is not None
    assert after[-1].stamp >= T0 + 4.5  # still cutting at the end


def test_a_burst_of_stamps_jumping_back_and_forth_ends_in_a_working_stream():
    """What the fuzzer sends: both topics get stamps of zero, 1 s and an hour old, 1e6 s ahead,
    then twenty camera stamps alternating 5 s back and ahead, interleaved with the true streams."""
    c = StepCutter(A, HZ)
    stream(c, 2.0)
    now = T0 + 2.0

    def offer(add, value, t):  # as the node does: a refused message is counted and dropped
        with contextlib.suppress(ValueError):
            add(value, t)

    for t in (now - 1.0, now - 3600.0, now + 1e6):
        offer(c.add_frame, frame(1), t)
        offer(c.add_action, np.zeros(A, np.float32), t)
    for k in range(20):
        offer(c.add_frame, frame(2), now - 5.0 if k % 2 else now + 5.0)
        if k % 5 == 0:  # the true streams go on in between
            offer(c.add_action, np.zeros(A, np.float32), now + k * 0.01)
    after = stream(c, 3.0, t0=now + 0.25)
    assert len(after) >= 5, c.stats
    assert all(s.action_before is not None for s in after[-4:])  # one context, growing


def test_a_camera_gap_starts_a_new_context():
    c = StepCutter(A, HZ)
    steps = stream(c, 1.6)
    steps += stream(c, 2.0, t0=T0 + 4.0)  # 2.4 s without anything
    gap = [s for s in steps if s.stamp >= T0 + 4.0]
    assert gap[0].action_before is None
    assert all(s.action_before is not None for s in gap[1:])
    assert c.stats.time_resets == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: c.add_action(np.zeros(A + 1), T0), "expected 2"),
        (lambda c: c.add_action(np.full(A, np.nan), T0), "NaN"),
        (lambda c: c.add_frame(frame(0), float("nan")), "finite"),
        (lambda c: c.add_frame(frame(0), T0 + 0.65), "older"),
    ],
)
def test_bad_inputs_raise_and_leave_the_stream_usable(call, match):
    c = StepCutter(A, HZ)
    stream(c, 1.0)
    with pytest.raises(ValueError, match=match):
        call(c)
    assert stream(c, 1.0, t0=T0 + 1.0)  # steps go on


def test_max_action_wait_is_bounded():
    with pytest.raises(ValueError, match="max_action_wait"):
        StepCutter(A, HZ, max_action_wait=20.0, max_action_wait_cap=10.0)
