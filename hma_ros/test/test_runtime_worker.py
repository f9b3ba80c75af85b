"""ModelWorker: the one thread that owns the model (live steps first, rollouts batched in
frame-sized slices, admission by cost), on a tiny real checkpoint."""

import threading
import time

import numpy as np
import pytest
from tiny_models import tiny_model

from hma_ros.model.checkpoint import save_checkpoint
from hma_ros.model.config import EmbodimentSpec
from hma_ros.runtime.chunking import Step
from hma_ros.runtime.requests import RolloutRequest
from hma_ros.runtime.runner import WorldModelRunner
from hma_ros.runtime.worker import CostModel, ModelWorker, RolloutRefusedError

ARM = EmbodimentSpec("arm", action_dim=2, control_hz=4.0)  # stride 2 -> step action of 4
W = ARM.step_action_dim


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model, tok = tiny_model("discrete", [ARM])
    folder = save_checkpoint(tmp_path_factory.mktemp("worker") / "ckpt", model)
    tok.save(folder / "tokenizer")
    return folder


class Recorder:
    def __init__(self):
        self.live, self.errors, self.order = [], [], []
        self.event = threading.Event()

    def on_prediction(self, live):
        self.live.append(live)
        self.order.append("live")
        self.event.set()

    def on_error(self, kind, message):
        self.errors.append((kind, message))
        self.event.set()


@pytest.fixture
def worker(checkpoint):
    rec = Recorder()
    w = ModelWorker(on_prediction=rec.on_prediction, on_error=rec.on_error, horizon=2)
    threads = []

    def load():
        threads.append(threading.current_thread().name)
        return WorldModelRunner.from_checkpoint(checkpoint)

    w.start(load)
    w.activate()
    assert threads == ["hma_model"]  # torch work, loading included, happens in the worker's thread
    w.rec = rec
    yield w
    assert w.stop(timeout=10.0)


def steps(n, t0=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        action = None if i == 0 else rng.normal(size=W).astype(np.float32)
        out.append(Step(t0 + 0.5 * i, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), action))
    return out


def wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def block(worker):
    """Hold the worker thread until the returned event is set."""
    release = threading.Event()
    worker.call(release.wait)
    return release


def rollout(n=2, h=2, seed=None, goal=None, context=None):
    cand = np.random.default_rng(n * 10 + h).normal(size=(n, h, W)).astype(np.float32)
    return RolloutRequest(candidate_actions=cand, seed=seed, goal=goal, context=context)


def test_live_steps_are_observed_and_predicted(worker):
    worker.push_steps(steps(3))
    wait(lambda: worker.rec.live)
    live = worker.rec.live[-1]
    assert live.step.stamp == 1.0
    assert live.horizon == 2
    assert live.prediction.frames.shape == (2, 32, 32, 3)
    assert worker.stats.steps_observed == 3
    assert worker.snapshot()["predictions"] == 1
    assert worker.context_stamp == 1.0


def test_steps_beyond_the_queue_restart_the_context_at_the_newest(worker):
    release = block(worker)
    worker.push_steps(steps(12))  # max_queued_steps = 8
    assert worker.stats.steps_dropped == 4
    assert worker._steps[0].action_before is None  # the context restarts: no action into a dropped frame
    release.set()
    wait(lambda: worker.rec.live)
    assert worker.stats.steps_observed == 8


def test_concurrent_live_rollouts_share_one_job_and_seeded_ones_run_alone(worker):
    worker.push_steps(steps(3))
    wait(lambda: worker.rec.live)
    release = block(worker)
    shared = [worker.submit(rollout(n=2)) for _ in range(3)]
    seeded = worker.submit(rollout(n=2, seed=7))
    release.set()
    answers = [f.result(timeout=30) for f in shared]
    assert all(a.shared and a.jobs == 1 for a in answers)
    assert all(a.result.frames.shape == (2, 2, 32, 32, 3) for a in answers)
    assert all(a.context_stamp == 1.0 for a in answers)
    alone = seeded.result(timeout=30)
    assert not alone.shared
    assert worker.stats.rollout_jobs == 2
    # A seeded request is reproducible: the same seed alone on the same context, by the runner itself.
    direct = worker.call(lambda: worker.runner.rollout(rollout(n=2, seed=7).candidate_actions, seed=7)).result()
    np.testing.assert_array_equal(alone.result.frames, direct.frames)


def test_a_large_request_is_split_into_jobs_that_fit_the_step_budget(worker):
    worker.push_steps(steps(2))
    wait(lambda: worker.rec.live)
    worker.step_budget = 1e-9  # one candidate per job
    assert worker.max_job_candidates() == 1
    goal = np.zeros((32, 32, 3), np.uint8)
    answer = worker.submit(rollout(n=3, h=2, goal=goal)).result(timeout=30)
    assert answer.jobs == 3
    assert answer.result.frames.shape == (3, 2, 32, 32, 3)
    assert answer.result.actions.shape == (3, 2, W)
    assert answer.result.costs.shape == (3,)
    assert worker.stats.rollout_jobs == 3


def test_live_steps_go_first_between_the_frames_of_a_rollout(worker):
    worker.push_steps(steps(2))
    wait(lambda: worker.rec.live)
    runner, start = worker.runner, worker.runner.start_rollout

    def start_with_a_step_arriving(*args, **kwargs):  # a camera step is cut while the rollout runs
        job = start(*args, **kwargs)
        first = job.step

        def step():
            done = first()
            worker.push_steps(steps(1, t0=5.0, seed=3)[:1])
            return done

        job.step = step
        return job

    runner.start_rollout = start_with_a_step_arriving
    future = worker.submit(rollout(n=1, h=4))
    future.add_done_callback(lambda _: worker.rec.order.append("rollout"))
    future.result(timeout=30)
    assert worker.rec.order[-2:] == ["live", "rollout"]  # the live prediction did not wait for the rollout


def test_admission_refuses_by_cost_queue_and_context(worker, checkpoint):
    with pytest.raises(RolloutRefusedError, match="not enough live context"):
        worker.submit(rollout())
    worker.push_steps(steps(2))
    wait(lambda: worker.rec.live)
    worker.max_rollout_seconds = 1e-6
    with pytest.raises(RolloutRefusedError, match=r"estimated .* s of model time for 2 candidates x 2 steps"):
        worker.submit(rollout())
    assert worker.stats.rollouts_refused_cost == 1
    worker.max_rollout_seconds = 100.0
    worker.step_budget = 1e-9
    with pytest.raises(RolloutRefusedError, match="a seeded request runs as one batch"):
        worker.submit(rollout(n=3, seed=1))
    worker.step_budget = 0.2
    worker.queue_size = 1
    release = block(worker)
    first = worker.submit(rollout())
    with pytest.raises(RolloutRefusedError, match="busy: 1 rollout requests are already queued"):
        worker.submit(rollout())
    assert worker.stats.rollouts_refused_busy == 1
    release.set()
    assert first.result(timeout=30).result.frames.shape[0] == 2  # admitted means answered


def test_deactivate_answers_queued_requests_and_stops_serving(worker):
    worker.push_steps(steps(2))
    wait(lambda: worker.rec.live)
    release = block(worker)
    queued = worker.submit(rollout())
    threading.Timer(0.2, release.set).start()
    assert worker.deactivate("the world model was deactivated")
    with pytest.raises(RolloutRefusedError, match="deactivated"):
        queued.result(timeout=5)
    with pytest.raises(RolloutRefusedError, match="not active"):
        worker.submit(rollout())
    worker.push_steps(steps(2))  # ignored while inactive
    assert worker.snapshot()["steps_pending"] == 0


def test_a_non_finite_prediction_is_discarded_and_the_context_restarts(worker):
    import torch

    worker.push_steps(steps(2))
    wait(lambda: worker.rec.live)

    def poison():
        with torch.no_grad():
            for p in worker.runner.backend.model.parameters():
                p.fill_(float("nan"))

    worker.call(poison).result()
    worker.push_steps(steps(1, t0=3.0)[:1])
    wait(lambda: worker.rec.errors)
    kind, message = worker.rec.errors[-1]
    assert kind == "invalid"
    assert "non-finite" in message
    assert worker.stats.predictions_invalid == 1
    assert len(worker.rec.live) == 1  # nothing published
    assert not worker.runner.ready  # the poisoned context is gone


def test_a_failing_loader_stops_the_thread_and_raises():
    w = ModelWorker(on_prediction=lambda live: None)

    def load():
        raise FileNotFoundError("no such checkpoint")

    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        w.start(load)
    assert not w.running


def test_cost_model_fits_a_line_and_stays_positive():
    cost = CostModel()
    for n in (1, 2, 4, 8):
        cost.add(n, 0.01 + 0.002 * n)
    assert cost.frame_seconds(16) == pytest.approx(0.01 + 0.032)
    flat = CostModel()
    flat.add(4, 0.1)
    assert flat.frame_seconds(8) == pytest.approx(0.2)  # one size: proportional
