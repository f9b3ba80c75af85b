"""WorldModelRunner on tiny real checkpoints (random weights): loading, live context,
prediction, rollouts, goal costs and the refusal of bad input."""

import numpy as np
import pytest
import torch
from tiny_models import tiny_fsq, tiny_model

from hma_ros.model.checkpoint import save_checkpoint
from hma_ros.model.config import EmbodimentSpec
from hma_ros.runtime.backends import BackendUnavailableError, resolve_device
from hma_ros.runtime.runner import WorldModelRunner

ARM = EmbodimentSpec("arm", action_dim=2, control_hz=4.0)  # stride 2 -> step action of 4
OTHER = EmbodimentSpec("other", action_dim=3, control_hz=2.0)


def tiny(variant: str):
    return tiny_model(variant, [ARM, OTHER])


@pytest.fixture(params=["discrete", "continuous"])
def checkpoint(request, tmp_path):
    model, tok = tiny(request.param)
    folder = save_checkpoint(tmp_path / f"ckpt_{request.param}", model)
    tok.save(folder / "tokenizer")
    return folder


def frames(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def feed(runner, n, seed=0):
    fr = frames(n, (48, 48), seed)  # any size: fitted to the model's resolution
    acts = np.random.default_rng(seed + 1).normal(size=(n, runner.step_action_dim)).astype(np.float32)
    for t in range(n):
        runner.observe(fr[t], None if t == 0 else acts[t - 1], stamp=0.5 * t)
    return fr, acts


def test_load_predict_shapes_and_stamps(checkpoint):
    r = WorldModelRunner.from_checkpoint(checkpoint, "arm", min_context=2)
    assert r.model_id == checkpoint.name
    assert not r.ready
    feed(r, 3)
    assert r.ready
    assert r.num_context == 3
    p = r.predict(3)
    h, w = r.image_size
    assert p.frames.shape == (3, h, w, 3)
    assert p.frames.dtype == np.uint8
    assert p.actions.shape == (3, 4)
    assert np.isfinite(p.actions).all()
    np.testing.assert_allclose(p.stamps, [1.5, 2.0, 2.5])


def test_rollout_shapes_determinism_and_live_context_untouched(checkpoint):
    r = WorldModelRunner.from_checkpoint(checkpoint, "arm")
    feed(r, 3)
    cache_before = r._cache
    cand = np.random.default_rng(5).normal(size=(4, 3, 4)).astype(np.float32)
    a = r.rollout(cand, seed=7)
    b = r.rollout(cand, seed=7)
    assert a.frames.shape == (4, 3, *r.image_size, 3)
    assert a.actions.shape == (4, 3, 4)
    assert a.costs is None
    np.testing.assert_array_equal(a.frames, b.frames)
    assert r._cache is cache_before
    assert not np.array_equal(a.frames, r.rollout(cand, seed=8).frames)  # the seed matters
    assert r.rollout(cand, seed=7, return_frames=False).frames is None


def test_live_context_equals_explicit_context(checkpoint):
    """Frames observed one at a time (incremental KV cache) = the same context given at once."""
    r = WorldModelRunner.from_checkpoint(checkpoint, "arm")
    fr, acts = feed(r, 4)
    cand = np.random.default_rng(2).normal(size=(2, 2, 4)).astype(np.float32)
    live = r.rollout(cand, seed=3)
    explicit = r.rollout(cand, context=(fr, acts), seed=3)
    np.testing.assert_array_equal(live.frames, explicit.frames)
    np.testing.assert_allclose(live.actions, explicit.actions, atol=1e-5)


def test_goal_cost_ranks_the_candidate_that_reaches_it(checkpoint):
    r = WorldModelRunner.from_checkpoint(checkpoint, "arm")
    feed(r, 2)
    cand = np.random.default_rng(4).normal(scale=2.0, size=(5, 2, 4)).astype(np.float32)
    ref = r.rollout(cand, seed=11)
    goal = ref.frames[3, -1]  # what candidate 3 ends in
    scored = r.rollout(cand, goal=goal, seed=11, return_frames=False)
    assert scored.costs.shape == (5,)
    assert scored.costs[3] == pytest.approx(0.0, abs=1e-12)
    assert int(np.argmin(scored.costs)) == 3


def test_context_slides_past_the_window(checkpoint):
    r = WorldModelRunner.from_checkpoint(checkpoint, "arm")
    window = r.model.config.max_frames - 1
    feed(r, window + 4)
    assert r.num_context == window
    assert r.predict(2).frames.shape[0] == 2


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda r: r.observe(np.zeros((32, 32, 3), np.float32), None, 9.0), "uint8"),
        (lambda r: r.observe(np.zeros((32, 32), np.uint8), None, 9.0), "uint8 RGB"),
        (lambda r: r.observe(np.zeros((32, 32, 3), np.uint8), np.zeros(3), 9.0), r"\(\.\.\., 4\)"),
        (lambda r: r.observe(np.zeros((32, 32, 3), np.uint8), np.full(4, np.nan), 9.0), "NaN"),
        (lambda r: r.observe(np.zeros((32, 32, 3), np.uint8), np.zeros(4), 0.1), "not after"),
        (lambda r: r.observe(np.zeros((32, 32, 3), np.uint8), np.zeros(4), float("nan")), "finite"),
        (lambda r: r.predict(0), "horizon"),
        (lambda r: r.rollout(np.zeros((0, 2, 4), np.float32)), "no candidate"),
        (lambda r: r.rollout(np.zeros((2, 2, 5), np.float32)), r"\(\.\.\., 4\)"),
        (lambda r: r.rollout(np.zeros((2, 4), np.float32)), "shape"),
        (lambda r: r.rollout(np.full((1, 2, 4), np.inf, np.float32)), "NaN or inf"),
        (lambda r: r.rollout(np.zeros((1, 2, 4), np.float32), goal=np.zeros((8, 8), np.uint8)), "goal"),
        (lambda r: r.rollout(np.zeros((1, 2, 4), np.float32), context=(frames(2, (32, 32)), np.zeros((3, 4)))), "rows"),
    ],
)
def test_bad_input_is_refused_and_context_survives(checkpoint, call, match):
    r = WorldModelRunner.from_checkpoint(checkpoint, "arm")
    feed(r, 3)
    cache, n = r._cache, r.num_context
    with pytest.raises(ValueError, match=match):
        call(r)
    assert r._cache is cache
    assert r.num_context == n
    assert r.predict(1).frames.shape[0] == 1


def test_not_ready_refuses_predict_and_live_rollout(checkpoint):
    r = WorldModelRunner.from_checkpoint(checkpoint, "arm")
    with pytest.raises(ValueError, match="not ready"):
        r.predict(1)
    with pytest.raises(ValueError, match="no live context"):
        r.rollout(np.zeros((1, 1, 4), np.float32))


def test_loading_errors_name_the_problem(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="several embodiments"):
        WorldModelRunner.from_checkpoint(checkpoint)
    with pytest.raises(KeyError, match="unknown embodiment"):
        WorldModelRunner.from_checkpoint(checkpoint, "franka")
    with pytest.raises(ValueError, match="unknown backend"):
        WorldModelRunner.from_checkpoint(checkpoint, "arm", backend="cuda")
    with pytest.raises(ValueError, match="TensorRT"):
        WorldModelRunner.from_checkpoint(checkpoint, "arm", backend="tensorrt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        WorldModelRunner.from_checkpoint(tmp_path / "nope", "arm")
    import shutil

    shutil.rmtree(checkpoint / "tokenizer")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        WorldModelRunner.from_checkpoint(checkpoint, "arm")


def test_mismatched_tokenizer_is_refused():
    model, _ = tiny("discrete")
    wrong = tiny_fsq(levels=(4, 4))
    with pytest.raises(ValueError, match="vocab_factors"):
        WorldModelRunner(model, wrong, "arm")


def test_rollout_commits_inside_the_next_frames_decoding(checkpoint):
    """H frames cost M * H trunk passes (each predicted frame is committed in the first pass
    of the next), and the samples equal the unfused predict_next + append_frames loop."""
    from hma_ros.runtime.backends import Backend, TorchBackend

    r = WorldModelRunner.from_checkpoint(checkpoint, "arm", num_steps=2)
    feed(r, 3)
    passes = []

    def count(model):  # the backend's own (single-robot) copy of the model runs the passes
        forward = model._forward_frames

        def counted(*args, **kwargs):
            passes.append(args[0].shape[1])  # frames in this pass
            return forward(*args, **kwargs)

        model._forward_frames = counted

    count(r.backend.model)
    cand = np.random.default_rng(3).normal(size=(2, 4, 4)).astype(np.float32)
    fused = r.rollout(cand, seed=11)
    assert len(passes) == 2 * 4  # M * H; the unfused loop takes (M + 1) * H - 1
    assert passes.count(2) == 3  # H - 1 fused commit + decode passes

    class Unfused(TorchBackend):
        advance = Backend.advance  # append_frames + predict_next

    r.backend = Unfused(r.model, "arm")
    count(r.backend.model)
    passes.clear()
    plain = r.rollout(cand, seed=11)
    assert len(passes) == 3 * 4 - 1  # positive control: the unfused loop costs one pass more per frame
    np.testing.assert_array_equal(fused.frames, plain.frames)
    np.testing.assert_allclose(fused.actions, plain.actions, atol=1e-5)


def test_tokenizer_found_through_extra_json_relative_and_id_checked(tmp_path):
    """Shipped models share one tokenizer folder: extra.json points at it, relative to the checkpoint."""
    import json
    import shutil

    model, tok = tiny("discrete")
    tok.save(tmp_path / "shared_tokenizer")
    folder = save_checkpoint(
        tmp_path / "ckpt",
        model,
        extra={"tokenizer": {"folder": "../shared_tokenizer", "id": tok.tokenizer_id}},
    )
    r = WorldModelRunner.from_checkpoint(folder, "arm")
    assert r.tokenizer.tokenizer_id == tok.tokenizer_id
    feed(r, 2)
    assert r.predict(1).frames.shape == (1, 32, 32, 3)

    extra = json.loads((folder / "extra.json").read_text())
    extra["tokenizer"]["id"] = "fsq-0000000000000000"
    (folder / "extra.json").write_text(json.dumps(extra))
    with pytest.raises(ValueError, match="was trained with tokenizer fsq-0000000000000000"):
        WorldModelRunner.from_checkpoint(folder, "arm")

    (folder / "extra.json").write_text(json.dumps({"step": 3}))
    with pytest.raises(FileNotFoundError, match="names no tokenizer"):
        WorldModelRunner.from_checkpoint(folder, "arm")
    shutil.rmtree(tmp_path / "shared_tokenizer")


def test_stepwise_rollout_equals_rollout_and_serves_row_slices(checkpoint):
    """start_rollout + step per frame + finish_rollout on slices = one rollout call; a shared
    context cache serves several jobs."""
    r = WorldModelRunner.from_checkpoint(checkpoint, "arm")
    fr, acts = feed(r, 3)
    cand = np.random.default_rng(9).normal(size=(3, 2, 4)).astype(np.float32)
    goal = frames(1, (32, 32), seed=4)[0]
    whole = r.rollout(cand, goal=goal, seed=5)
    job = r.start_rollout(cand, seed=5)
    assert (job.num_candidates, job.horizon, job.frames_done, job.done) == (3, 2, 0, False)
    with pytest.raises(RuntimeError, match="not done"):
        _ = job.tokens
    assert job.step() is False
    assert job.frames_done == 1
    assert job.step() is True
    parts = [r.finish_rollout(job, rows=rows, goal=goal) for rows in (slice(0, 1), slice(1, 3))]
    np.testing.assert_array_equal(np.concatenate([p.frames for p in parts]), whole.frames)
    np.testing.assert_allclose(np.concatenate([p.costs for p in parts]), whole.costs)
    cache = r.context_cache(fr, acts)
    via_cache = r.finish_rollout(r.start_rollout(cand, context=cache, seed=5).run())
    via_tuple = r.rollout(cand, context=(fr, acts), seed=5)
    np.testing.assert_array_equal(via_cache.frames, via_tuple.frames)


def test_non_finite_model_output_is_never_returned(checkpoint):
    """A model that produces NaN (poisoned weights here) raises NonFiniteOutputError instead of
    returning NaN actions; positive control: the same runner is fine before."""
    import torch

    from hma_ros.runtime.runner import NonFiniteOutputError

    r = WorldModelRunner.from_checkpoint(checkpoint, "arm")
    feed(r, 2)
    assert np.isfinite(r.predict(1).actions).all()
    with torch.no_grad():
        for p in r.backend.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError, match="non-finite"):
        r.predict(1)
    with pytest.raises(NonFiniteOutputError):
        r.rollout(np.zeros((2, 1, 4), np.float32))


def test_a_device_this_machine_lacks_is_refused_before_loading(checkpoint):
    with pytest.raises(ValueError, match="not one of cpu, cuda, cuda:N"):
        resolve_device("gpu")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(BackendUnavailableError, match="CUDA GPU"):
        resolve_device("cuda:99")  # none here, or not that many
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU visible to torch"):
            WorldModelRunner.from_checkpoint(checkpoint, "arm", backend_options={"device": "cuda"})
