"""ONNX export of the per-frame step and the inference backends, on tiny random checkpoints:
ONNX Runtime equals torch (graph outputs, caches, rollouts), the export CLI and its cache, and
the TensorRT backend's error where TensorRT cannot run."""

import json

import numpy as np
import pytest
import torch
from tiny_models import tiny_model

from hma_ros.model.checkpoint import load_model, save_checkpoint
from hma_ros.model.config import EmbodimentSpec
from hma_ros.model.hma import KVCache
from hma_ros.runtime import export as ex
from hma_ros.runtime.backends import (
    BackendUnavailableError,
    CompiledTorchBackend,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    create_backend,
)
from hma_ros.runtime.runner import WorldModelRunner

ort = pytest.importorskip("onnxruntime")

ARM = EmbodimentSpec("arm", action_dim=2, control_hz=4.0, action_mean=(0.5, -1.0), action_std=(2.0, 0.5))
OTHER = EmbodimentSpec("other", action_dim=3, control_hz=4.0)  # step 6 > arm's 4: the full model pads "arm"
VARIANTS = ("discrete", "continuous")


def tiny(variant: str):
    return tiny_model(variant, [OTHER, ARM])


@pytest.fixture(scope="module", params=VARIANTS)
def exported(request, tmp_path_factory):
    """(checkpoint folder, model, export folder, metadata) for embodiment "arm"."""
    model, tok = tiny(request.param)
    root = tmp_path_factory.mktemp(request.param)
    folder = save_checkpoint(root / "ckpt", model)
    tok.save(folder / "tokenizer")
    meta = ex.export(model, "arm", root / "export", checkpoint=folder)
    return folder, model, root / "export", meta


def session(folder, graph="step.onnx"):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(folder / graph), opts, providers=["CPUExecutionProvider"])


def context(model, batch, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    if c.variant == "discrete":
        x = torch.randint(0, c.vocab_size, (batch, frames, c.tokens_h, c.tokens_w), generator=g)
    else:
        x = torch.randn(batch, frames, c.tokens_h, c.tokens_w, c.token_dim, generator=g)
    acts = torch.randn(batch, frames, ARM.step_action_dim, generator=g)
    acts[:, 0] = float("nan")
    return x, acts


@pytest.mark.parametrize("filled", [0, 2, 5])  # empty cache (first frame), partly filled, full
def test_step_graph_equals_torch_step(exported, filled):
    """step.onnx == the full (two-embodiment) model's HMA.step + heads, at two batch sizes,
    with masked tokens and an unknown action in the batch."""
    _, model, folder, meta = exported
    sess = session(folder)
    c, idx = model.config, model.config.embodiment_index("arm")
    sig = meta["graphs"]["step"]
    g = torch.Generator().manual_seed(filled)
    for batch in (1, 4):
        args = ex.random_inputs(sig, ex.single_embodiment(model, "arm"), batch, g)
        args[5] = torch.arange(c.max_frames - 1) >= c.max_frames - 1 - filled  # cache_valid
        args[6] = torch.tensor(filled if filled < 5 else 12_345)  # cache_pos: frames committed so far
        with torch.no_grad():
            emb = torch.full((batch,), idx, dtype=torch.long)
            wide = torch.nn.functional.pad(args[2], (0, model.max_step_dim - ARM.step_action_dim))
            h, readout, k, v = model.step(*args[:2], wide, emb, KVCache(*args[3:]))
            acts = model._actions_out(readout[:, None], model._selection(emb), raw=True)[:, 0, : ARM.step_action_dim]
            heads = model._token_logits(h) if c.variant == "discrete" else [h]
        got = sess.run(None, {io["name"]: a.numpy() for io, a in zip(sig["inputs"], args, strict=True)})
        assert [tuple(o.shape) for o in got] == [tuple(r.shape) for r in [*heads, acts, k, v]]
        for io, ref, out in zip(sig["outputs"], [*heads, acts, k, v], got, strict=True):
            np.testing.assert_allclose(out, ref.numpy(), atol=1e-4, rtol=0, err_msg=io["name"])
        if filled and batch > 1:  # positive control: a known action matters after the first frame
            other = [a.clone() for a in args]
            other[2] = other[2] + 1.0
            moved = sess.run(None, {io["name"]: a.numpy() for io, a in zip(sig["inputs"], other, strict=True)})
            assert np.abs(moved[0][1:] - got[0][1:]).max() > 1e-3
            np.testing.assert_array_equal(moved[0][0], got[0][0])  # row 0's action is unknown (NaN)


@pytest.mark.parametrize("filled", [0, 2, 5])  # empty cache, partly filled, full (the commit evicts)
def test_advance_graph_equals_torch_commit_step(exported, filled):
    """advance.onnx == the full model's HMA.commit_step + heads: the committed frame's keys and
    values and the next frame's outputs, at two batch sizes."""
    _, model, folder, meta = exported
    sess = session(folder, "advance.onnx")
    c, idx = model.config, model.config.embodiment_index("arm")
    sig = meta["graphs"]["advance"]
    g = torch.Generator().manual_seed(10 + filled)
    for batch in (1, 4):
        args = ex.random_inputs(sig, ex.single_embodiment(model, "arm"), batch, g)
        args[7] = torch.arange(c.max_frames - 1) >= c.max_frames - 1 - filled  # cache_valid
        args[8] = torch.tensor(filled if filled < 5 else 12_345)  # cache_pos

        def wide(a):
            return torch.nn.functional.pad(a, (0, model.max_step_dim - ARM.step_action_dim))

        with torch.no_grad():
            emb = torch.full((batch,), idx, dtype=torch.long)
            f, fa, x, mask, a = args[:5]
            h, readout, k, v = model.commit_step(f, wide(fa), x, mask, wide(a), emb, KVCache(*args[5:]))
            acts = model._actions_out(readout[:, None], model._selection(emb), raw=True)[:, 0, : ARM.step_action_dim]
            heads = model._token_logits(h) if c.variant == "discrete" else [h]
        got = sess.run(None, {io["name"]: t.numpy() for io, t in zip(sig["inputs"], args, strict=True)})
        for io, ref, out in zip(sig["outputs"], [*heads, acts, k, v], got, strict=True):
            np.testing.assert_allclose(out, ref.numpy(), atol=1e-4, rtol=0, err_msg=io["name"])


class _Counted:
    def __init__(self, graph, calls, name):
        self.graph, self.calls, self.name = graph, calls, name

    def run(self, inputs):
        self.calls.append(self.name)
        return self.graph.run(inputs)


def test_graph_backend_advance_is_m_calls_and_old_exports_still_work(exported):
    """A frame of a rollout costs M graph calls (advance, then steps), like the torch backend's
    M passes; an export without advance.onnx composes commit + predict (M + 1) to the same numbers."""
    _, model, folder, _ = exported
    be = OnnxRuntimeBackend(model, "arm", folder, threads=1)
    calls: list[str] = []
    be._graphs = {name: _Counted(graph, calls, name) for name, graph in be._graphs.items()}
    frames, acts = context(model, 1, 6)  # commits past the 5-slot cache: the sliding window
    cache = be.append_frames(be.init_cache(), frames[:, :5], acts[:, :5])
    action = torch.randn(3, ARM.step_action_dim)
    frame, frame_action = frames[:, 5].expand(3, *frames.shape[2:]), acts[:, 5].expand(3, -1)

    def advance():
        calls.clear()
        out = be.advance(cache, frame, frame_action, action, 3, generator=torch.Generator().manual_seed(5))
        return out, [n for n in calls if n != "diffusion"]

    fused, fused_calls = advance()
    assert fused_calls == ["advance", "step", "step"]
    del be._graphs["advance"]
    composed, composed_calls = advance()
    assert composed_calls == ["step"] * 4
    torch.testing.assert_close(fused[0].k, composed[0].k, atol=1e-5, rtol=0)
    assert torch.equal(fused[0].valid, composed[0].valid)
    assert int(fused[0].pos) == int(composed[0].pos) == 6
    if model.config.variant == "discrete":
        assert torch.equal(fused[1], composed[1])
    else:
        torch.testing.assert_close(fused[1], composed[1], atol=1e-3, rtol=0)
    torch.testing.assert_close(fused[2], composed[2], atol=1e-4, rtol=0)


def test_graphs_have_no_float64(exported):
    """TensorRT has no float64: no double input, output, initializer, constant, cast or
    intermediate tensor (rotary angles and the NaN-action test stay in float32)."""
    onnx = pytest.importorskip("onnx")
    _, _, folder, meta = exported
    double = onnx.TensorProto.DOUBLE
    for graph in meta["graphs"].values():
        g = onnx.shape_inference.infer_shapes(onnx.load(str(folder / graph["file"]))).graph
        values = [*g.input, *g.output, *g.value_info]
        bad = [v.name for v in values if v.type.tensor_type.elem_type == double]
        bad += [i.name for i in g.initializer if i.data_type == double]
        for n in g.node:
            attrs = {a.name: a for a in n.attribute}
            if n.op_type == "Cast" and attrs["to"].i == double:
                bad.append(n.name)
            if n.op_type == "Constant" and "value" in attrs and attrs["value"].t.data_type == double:
                bad.append(n.name)
        assert not bad, f"{graph['file']}: float64 in {bad[:5]}"


def test_check_export_and_diffusion_graph(exported):
    _, model, folder, _ = exported
    diffs = ex.check_export(folder, model, "arm")
    assert diffs
    assert max(diffs.values()) < 1e-4, diffs
    assert ("diffusion.eps" in diffs) == (model.config.variant == "continuous")


def test_graph_backend_commits_and_predicts_like_torch(exported):
    """Same caches (multi-frame commit = frame-by-frame steps) and the same seeded choices."""
    _, model, folder, _ = exported
    torch_be = TorchBackend(model, "arm")
    ort_be = OnnxRuntimeBackend(model, "arm", folder, threads=1)
    frames, acts = context(model, 1, 3)
    ref = torch_be.append_frames(torch_be.init_cache(), frames, acts)
    got = ort_be.append_frames(ort_be.init_cache(), frames, acts)
    torch.testing.assert_close(got.k, ref.k, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.v, ref.v, atol=1e-4, rtol=0)
    assert torch.equal(got.valid, ref.valid)
    action = torch.randn(5, ARM.step_action_dim)
    action[1] = float("nan")
    orders = ("random", "confidence") if model.config.variant == "discrete" else ("random",)
    for order in orders:
        f_ref, a_ref = torch_be.predict_next(ref, action, 2, 1.0, order, torch.Generator().manual_seed(3))
        f_got, a_got = ort_be.predict_next(ref, action, 2, 1.0, order, torch.Generator().manual_seed(3))
        assert f_got.shape == f_ref.shape
        torch.testing.assert_close(a_got, a_ref[:, : ARM.step_action_dim], atol=1e-4, rtol=0)
        if model.config.variant == "discrete":
            assert torch.equal(f_got, f_ref)
        else:  # DDIM with clipping amplifies 1e-6 trunk differences a little
            torch.testing.assert_close(f_got, f_ref, atol=1e-3, rtol=0)
    # advance (commit frame t + predict t+1): fused in torch, composed in the graph backends.
    out_ref = torch_be.advance(ref, f_ref[:2], action[:2], action[2:4], generator=torch.Generator().manual_seed(4))
    out_got = ort_be.advance(ref, f_ref[:2], action[:2], action[2:4], generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out_got[0].k, out_ref[0].k, atol=1e-4, rtol=0)
    assert int(out_got[0].pos) == int(out_ref[0].pos) == 4
    if model.config.variant == "discrete":
        assert torch.equal(out_got[1], out_ref[1])
    else:
        torch.testing.assert_close(out_got[1], out_ref[1], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="step_action_dim"):
        ort_be.predict_next(ref, torch.zeros(1, 3))


def test_runner_on_onnxruntime_rolls_out_like_torch(exported, tmp_path):
    folder, model, _, _ = exported
    opts = {"cache_dir": tmp_path, "threads": 1}
    runners = {
        "torch": WorldModelRunner.from_checkpoint(folder, "arm"),
        "onnxruntime": WorldModelRunner.from_checkpoint(folder, "arm", backend="onnxruntime", backend_options=opts),
    }
    assert isinstance(runners["onnxruntime"].backend, OnnxRuntimeBackend)
    rng = np.random.default_rng(0)
    fr = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    acts = rng.normal(size=(3, 4)).astype(np.float32)
    cand = rng.normal(size=(6, 4, 4)).astype(np.float32)
    out = {}
    for name, r in runners.items():
        for t in range(3):
            r.observe(fr[t], None if t == 0 else acts[t - 1], stamp=0.5 * t)
        out[name] = (r.rollout(cand, seed=7), r.predict(3), r.rollout(cand, context=(fr, acts), seed=7))
    for ref, got in zip(out["torch"], out["onnxruntime"], strict=True):
        if model.config.variant == "discrete":
            # Identical tokens for this seed. (ORT and torch logits differ by ~1e-7; a near-tie
            # could flip one token in rare seeds: then agreement, not equality, is the contract.)
            np.testing.assert_array_equal(got.frames, ref.frames)
        else:  # pixel tokens: latents equal to ~1e-4, decoded to uint8 at most one level apart
            assert np.abs(got.frames.astype(int) - ref.frames.astype(int)).max() <= 1
        np.testing.assert_allclose(got.actions, ref.actions, atol=1e-3, rtol=1e-4)
    # The export was made once into the cache dir, and is found again (not re-exported).
    (made,) = list((tmp_path / "export").glob("*/arm-opset*"))
    stamp = (made / ex.META_FILE).stat().st_mtime_ns
    again = WorldModelRunner.from_checkpoint(folder, "arm", backend="onnxruntime", backend_options=opts)
    assert again.backend.export_dir == made
    assert (made / ex.META_FILE).stat().st_mtime_ns == stamp


def test_compiled_torch_backend_agrees(exported):
    _, model, _, _ = exported
    if model.config.variant != "discrete":
        pytest.skip("one variant is enough to check the compiled path's plumbing")
    ref_be = TorchBackend(model, "arm")
    comp = create_backend("torch", model, "arm", compile=True, compile_backend="eager")
    assert isinstance(comp, CompiledTorchBackend)
    frames, acts = context(model, 1, 2, seed=4)
    cache = ref_be.append_frames(ref_be.init_cache(), frames, acts)
    action = torch.randn(3, ARM.step_action_dim)
    f_ref, _ = ref_be.predict_next(cache, action, 2, 1.0, "random", torch.Generator().manual_seed(1))
    f_got, _ = comp.predict_next(cache, action, 2, 1.0, "random", torch.Generator().manual_seed(1))
    assert torch.equal(f_got, f_ref)


def test_export_cli_writes_graphs_and_description(exported, tmp_path, capsys):
    folder, model, _, _ = exported
    out = tmp_path / "cli"
    meta = ex.main([str(folder), "--embodiment", "arm", "--out", str(out), "--check", "--opset", "18"])
    files = {"step.onnx", "advance.onnx", "export.json"}
    files |= {"diffusion.onnx"} if model.config.variant == "continuous" else set()
    assert {p.name for p in out.iterdir()} == files
    saved = json.loads((out / "export.json").read_text())
    assert saved == meta
    assert saved["checkpoint_id"] == ex.checkpoint_id(folder)
    assert (saved["embodiment"], saved["opset"], saved["variant"]) == ("arm", 18, model.config.variant)
    assert [i["name"] for i in saved["graphs"]["step"]["inputs"]][1:] == [
        "token_mask",
        "prev_action",
        "cache_k",
        "cache_v",
        "cache_valid",
        "cache_pos",
    ]
    assert saved["graphs"]["step"]["inputs"][2]["shape"] == ["batch", ARM.step_action_dim]
    advance = [i["name"] for i in saved["graphs"]["advance"]["inputs"]]
    step = [i["name"] for i in saved["graphs"]["step"]["inputs"]]
    assert advance[1:2] + advance[3:] == ["frame_action", *step[1:]]
    assert "advance.k_new" in saved["check"]
    assert max(saved["check"].values()) < 1e-4
    printed = capsys.readouterr().out
    assert "max abs diff (all outputs)" in printed
    import onnx

    assert max(o.version for o in onnx.load(str(out / "step.onnx")).opset_import if o.domain in ("", "ai.onnx")) == 18
    with pytest.raises(SystemExit):
        ex.main([str(folder), "--out", str(tmp_path / "x")])  # two embodiments: which one?


def test_shipped_export_is_preferred_and_stale_ones_are_not(exported, tmp_path):
    folder, model, export_dir, _ = exported
    if model.config.variant != "discrete":
        pytest.skip("the cache logic does not depend on the variant")
    shipped = folder / ex.EXPORT_SUBDIR / "arm"
    shipped.parent.mkdir(exist_ok=True)
    if not shipped.exists():
        shipped.symlink_to(export_dir, target_is_directory=True)
    try:
        assert ex.ensure_export(folder, "arm", model=model, cache_dir=tmp_path) == shipped
        # Same files, other weights: the shipped export no longer matches and is ignored.
        changed = load_model(folder)
        next(changed.parameters()).data += 1.0
        other = save_checkpoint(tmp_path / "other", changed)
        (other / ex.EXPORT_SUBDIR).mkdir()
        (other / ex.EXPORT_SUBDIR / "arm").symlink_to(export_dir, target_is_directory=True)
        got = ex.ensure_export(other, "arm", model=changed, cache_dir=tmp_path / "cache")
        assert got.parent.name == ex.checkpoint_id(other)
        assert ex.load_meta(got)["checkpoint_id"] == ex.checkpoint_id(other)
    finally:
        shipped.unlink()
    with pytest.raises(ex.ExportError, match="not found"):
        ex.load_meta(tmp_path / "nothing")
    with pytest.raises(ValueError, match="wanted 'other'"):
        OnnxRuntimeBackend(model, "other", export_dir)


def test_tensorrt_backend_fails_clearly_without_tensorrt(exported):
    folder, model, export_dir, _ = exported
    try:
        import tensorrt  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("TensorRT and a GPU are here: the error path does not apply")
    except ImportError:
        pass
    for make in (
        lambda: create_backend("tensorrt", model, "arm", folder),
        lambda: TensorRTBackend(model, "arm", export_dir),
        lambda: WorldModelRunner.from_checkpoint(folder, "arm", backend="tensorrt"),
    ):
        with pytest.raises(BackendUnavailableError, match="TensorRT"):
            make()
    assert next(model.parameters()).device.type == "cpu"  # nothing was moved on the way out


@pytest.mark.parametrize("variant", VARIANTS)
def test_window_graph_is_the_full_reforward_and_benchmarks_both_engines(variant, tmp_path):
    """WindowForward (the re-forward a cache saves) gives the model's own last-frame outputs,
    in torch and in ONNX Runtime; the export benchmark times it beside the cached step."""
    model, _ = tiny(variant)
    sub = ex.single_embodiment(model, "arm")
    sig = ex.window_signature(sub)
    g = torch.Generator().manual_seed(4)
    inputs = ex.random_inputs(sig, sub, 3, g)
    window = ex.WindowForward(sub).eval()
    with torch.no_grad():
        got = window(*inputs)
        ref = sub.outputs(
            inputs[0].reshape(3, sub.config.max_frames, 4, 4, *inputs[0].shape[3:]), inputs[2], "arm", inputs[1]
        )
    if variant == "discrete":
        for lg, r in zip(got[:-1], ref["logits"], strict=True):
            torch.testing.assert_close(lg, r[:, -1])
    else:
        torch.testing.assert_close(got[0], ref["hidden"][:, -1])
    torch.testing.assert_close(got[-1], ref["actions"][:, -1, : sub.max_step_dim])
    with torch.no_grad():
        ex._export_graph(window, sig, inputs, tmp_path / "window.onnx", ex.DEFAULT_OPSET)
    feed = {io["name"]: x.numpy() for io, x in zip(sig["inputs"], inputs, strict=True)}
    for o, t in zip(session(tmp_path, "window.onnx").run(None, feed), got, strict=True):
        np.testing.assert_allclose(o, t.numpy(), atol=1e-4, rtol=1e-4)

    ex.export(model, "arm", tmp_path / "export")
    rows = ex.benchmark(model, "arm", tmp_path / "export", batches=(1,), threads=(1,))
    assert {(r["backend"], r["mode"]) for r in rows} == {
        (b, m) for b in ("torch", "onnxruntime") for m in ("cached", "full")
    }
    assert all(r["ms_per_frame"] > 0 for r in rows)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(
        ["export.json", "step.onnx", "advance.onnx", *(["diffusion.onnx"] if variant == "continuous" else [])]
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_backend_runs_only_its_robot_and_matches_the_full_model(variant):
    """The torch backend keeps a single-embodiment copy (the other robots' stems and
    modulations would run on every pass for nothing): same caches, frames and read-outs."""
    model, _ = tiny(variant)
    backend = TorchBackend(model, "arm")
    assert backend.model.config.embodiment_names == ("arm",)
    assert len(model.config.embodiments) == 2  # the caller's model is left alone
    ctx, acts = context(model, 1, 3)
    cache = model.append_frames(model.init_cache(1), ctx[:, :2], acts[:, :2], "arm")
    own = backend.append_frames(backend.init_cache(1), ctx[:, :2], acts[:, :2])
    assert torch.equal(cache.k, own.k)
    assert torch.equal(cache.v, own.v)
    action = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    ref = model.advance(
        cache,
        ctx[:, 2].expand(4, *ctx.shape[2:]),
        acts[:, 2].expand(4, -1),
        action,
        "arm",
        generator=torch.Generator().manual_seed(2),
    )
    got = backend.advance(
        own,
        ctx[:, 2].expand(4, *ctx.shape[2:]),
        acts[:, 2].expand(4, -1),
        action,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.equal(ref[0].k, got[0].k)
    assert torch.equal(ref[1], got[1])
    assert torch.equal(ref[2][:, :4], got[2][:, :4])


def test_onnxruntime_sessions_do_not_spin(exported):
    """ORT's spinning workers fought torch's threads for 2 cores (a cached frame 61 ms vs 23 ms):
    the backend's sessions sleep between ops, with the thread count asked for."""
    from hma_ros.runtime.backends import session_options

    opts = session_options(ort, 2)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (2, 1)
    _, model, folder, _ = exported
    be = OnnxRuntimeBackend(model, "arm", folder, threads=2)
    for graph in be._graphs.values():
        got = graph.session.get_session_options()
        assert got.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert got.intra_op_num_threads == 2
