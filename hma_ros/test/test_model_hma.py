"""HMA model: shapes, causality, KV cache == re-forward, mixed embodiments, determinism, errors."""

import dataclasses
import itertools
import math
import re

import pytest
import torch

from hma_ros.model import ACTION_CONDITIONINGS, HMA, SETTINGS, EmbodimentSpec, make_config
from hma_ros.model.hma import Rotary, gumbel_sample, patchify_latents, unmask_schedule, unpatchify_latents

EMBS = (
    EmbodimentSpec("arm", 3, 6.0, action_mean=(0.5, -1.0, 2.0), action_std=(2.0, 0.5, 1.0)),  # stride 3, 9
    EmbodimentSpec("pusher", 2, 4.0),  # stride 2, step dim 4
)
A = 9  # padded step-action width


def tiny(variant="discrete", **kw) -> HMA:
    torch.manual_seed(0)
    model = HMA(make_config("hma_tiny", EMBS, variant=variant, **kw))
    # Zero-initialised layers would hide wiring bugs: perturb every weight.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def frames(variant, b, t, seed=1):
    g = torch.Generator().manual_seed(seed)
    if variant == "discrete":
        return torch.randint(0, 64, (b, t, 4, 4), generator=g)
    return torch.randn(b, t, 4, 4, 4, generator=g)


def batch(variant, b=3, t=6, setting="forward_dynamics"):
    key = "tokens" if variant == "discrete" else "latents"
    return {
        key: frames(variant, b, t),
        "actions": torch.randn(b, t, A, generator=torch.Generator().manual_seed(2)),
        "embodiment": torch.tensor([0, 1, 0][:b]),
        "setting": setting,
    }


@pytest.mark.parametrize("variant", ["discrete", "continuous"])
@pytest.mark.parametrize("setting", SETTINGS)
def test_forward_loss_and_gradients(variant, setting):
    model = tiny(variant).train()
    loss, metrics = model(batch(variant, setting=setting))
    assert loss.shape == ()
    assert torch.isfinite(loss)
    loss.backward()
    assert "loss" in metrics
    assert ("action_loss" in metrics) == (setting in ("full", "policy"))
    assert ("video_loss" in metrics) == (setting != "policy")
    if variant == "discrete" and setting != "policy":
        assert 0.0 <= float(metrics["accuracy"]) <= 1.0
    # Both embodiments' stems get gradient from a mixed batch (unless actions are dropped).
    if setting != "video":
        for stem in model.stems.values():
            assert stem.mlp[0].weight.grad is not None
            assert stem.mlp[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("conditioning", ACTION_CONDITIONINGS)
@pytest.mark.parametrize("variant", ["discrete", "continuous"])
def test_generate_shapes(variant, conditioning):
    model = tiny(variant, action_conditioning=conditioning)
    ctx = frames(variant, 1, 2)
    out = model.generate(ctx, torch.randn(1, 2, A), torch.randn(3, 2, A), "arm")
    tail = (4, 4) if variant == "discrete" else (4, 4, 4)
    assert out.frames.shape == (3, 3, *tail)
    assert out.actions.shape == (3, 3, A)
    if variant == "discrete":
        assert out.frames.dtype == torch.long
        assert out.frames.min() >= 0
        assert out.frames.max() < 64


@pytest.mark.parametrize("conditioning", ["modulation+concat", "cross_attention", "add"])
def test_causality_with_positive_control(conditioning):
    model = tiny(action_conditioning=conditioning)
    x = frames("discrete", 2, 6)
    prev = torch.randn(2, 6, A)
    base = model.outputs(x, prev, "arm")["hidden"]
    t = 2
    x2 = x.clone()
    x2[:, t + 1] = (x2[:, t + 1] + 1) % 64
    changed = model.outputs(x2, prev, "arm")["hidden"]
    torch.testing.assert_close(changed[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6)
    assert (changed[:, t + 1] - base[:, t + 1]).abs().max() > 1e-3  # positive control
    # The action producing frame t+1 cannot reach frames <= t either.
    prev2 = prev.clone()
    prev2[:, t + 1] += 1.0
    changed = model.outputs(x, prev2, "arm")["hidden"]
    torch.testing.assert_close(changed[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6)
    assert (changed[:, t + 1] - base[:, t + 1]).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["discrete", "continuous"])
def test_cached_step_equals_full_forward(variant):
    model = tiny(variant)
    x = frames(variant, 2, 5)
    prev = torch.randn(2, 5, A)
    full = model.outputs(x, prev, "pusher")
    cache = model.append_frames(model.init_cache(2), x[:, :4], prev[:, :4], "pusher")
    assert cache.num_frames == 4
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, ::3] = True  # a partially masked frame, as during decoding
    full_masked = model.outputs(x, prev, "pusher", token_mask=torch.stack([torch.zeros_like(mask)] * 4 + [mask], 1))
    emb = torch.ones(2, dtype=torch.long)
    h, _readout, _, _ = model.step(x[:, 4].flatten(1, 2), mask, prev[:, 4], emb, cache)
    torch.testing.assert_close(h, full_masked["hidden"][:, 4], atol=1e-5, rtol=1e-5)
    assert (full_masked["hidden"][:, 4] - full["hidden"][:, 4]).abs().max() > 1e-3  # the mask matters
    # Committing frame by frame equals committing all at once.
    one_by_one = model.init_cache(2)
    for t in range(4):
        one_by_one = model.append_frame(one_by_one, x[:, t], prev[:, t], "pusher")
    torch.testing.assert_close(one_by_one.k, cache.k, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("variant", "order"), [("discrete", "random"), ("discrete", "confidence"), ("continuous", "random")]
)
def test_cached_generation_equals_reforward(variant, order):
    model = tiny(variant)
    ctx = frames(variant, 1, 2)
    ca, fa = torch.randn(1, 2, A), torch.randn(4, 3, A)  # 2 context + 4 predicted = max_frames 6
    outs = [
        model.generate(ctx, ca, fa, "arm", order=order, generator=torch.Generator().manual_seed(3), use_cache=c)
        for c in (True, False)
    ]
    if variant == "discrete":
        assert torch.equal(outs[0].frames, outs[1].frames)
    else:  # DDIM amplifies float rounding a little at high noise levels
        torch.testing.assert_close(outs[0].frames, outs[1].frames, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(outs[0].actions, outs[1].actions, atol=1e-3, rtol=1e-3)


def test_rollout_past_the_window_slides():
    model = tiny()
    out = model.generate(frames("discrete", 1, 5), torch.randn(1, 5, A), torch.randn(2, 7, A), "arm")
    assert out.frames.shape == (2, 8, 4, 4)
    assert torch.isfinite(out.actions).all()
    cache = model.init_cache(1)
    for t in range(8):
        cache = model.append_frames(cache, frames("discrete", 1, 1, seed=t), torch.randn(1, 1, A), "arm")
    assert cache.num_frames == 5  # max_frames - 1 slots


def test_mixed_batch_equals_per_embodiment_runs():
    model = tiny()
    x = frames("discrete", 4, 5)
    prev = torch.randn(4, 5, A)
    emb = torch.tensor([1, 0, 0, 1])
    mixed = model.outputs(x, prev, emb)
    for i, name in enumerate(["arm", "pusher"]):
        idx = (emb == i).nonzero()[:, 0]
        alone = model.outputs(x[idx], prev[idx], name)
        torch.testing.assert_close(mixed["hidden"][idx], alone["hidden"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mixed["actions"][idx], alone["actions"], atol=1e-5, rtol=1e-5)
    # Positive control: routing everything through one embodiment (the reference's domain[0]) differs.
    wrong = model.outputs(x, prev, "pusher")
    assert (wrong["hidden"][emb == 0] - mixed["hidden"][emb == 0]).abs().max() > 1e-3


def test_padding_beyond_step_dim_is_ignored():
    model = tiny()
    x = frames("discrete", 2, 4)
    prev = torch.randn(2, 4, A)
    noisy = prev.clone()
    noisy[..., 4:] = 100.0  # pusher's step dim is 4
    a = model.outputs(x, prev, "pusher")["hidden"]
    b = model.outputs(x, noisy, "pusher")["hidden"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_seeded_determinism():
    model = tiny().train()
    b = batch("discrete")
    torch.manual_seed(5)
    l1, _ = model(b)
    torch.manual_seed(5)
    l2, _ = model(b)
    assert torch.equal(l1, l2)
    model.eval()
    args = (frames("discrete", 1, 2), torch.randn(1, 2, A), torch.randn(2, 2, A), "arm")
    g1 = model.generate(*args, generator=torch.Generator().manual_seed(0)).frames
    g2 = model.generate(*args, generator=torch.Generator().manual_seed(0)).frames
    g3 = model.generate(*args, generator=torch.Generator().manual_seed(1)).frames
    assert torch.equal(g1, g2)
    assert not torch.equal(g1, g3)


def test_temperature_scales_logits():
    logits = torch.tensor([2.0, 1.0, 0.0]).expand(4000, 3)
    top = []
    for temperature in (0.25, 1.0, 4.0):
        ids, _ = gumbel_sample(logits, temperature, torch.Generator().manual_seed(0))
        top.append((ids == 0).float().mean().item())
    assert top[0] > top[1] > top[2]
    assert abs(top[1] - torch.softmax(logits[0], 0)[0].item()) < 0.03
    ids, _prob = gumbel_sample(logits, 0.0, None)
    assert (ids == 0).all()


def test_unmask_schedule():
    assert unmask_schedule(64, 2) == [45, 0]
    assert unmask_schedule(4, 8)[-1] == 0
    s = unmask_schedule(16, 5)
    assert all(a > b for a, b in itertools.pairwise(s))


def test_unknown_actions_use_the_mask_embedding():
    model = tiny()
    x = frames("discrete", 1, 3)
    prev = torch.randn(1, 3, A)
    unknown = prev.clone()
    unknown[:, 2] = float("nan")
    a = model.outputs(x, unknown, "arm")["hidden"]
    assert torch.isfinite(a).all()
    assert (a[:, 2] - model.outputs(x, prev, "arm")["hidden"][:, 2]).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda b: b.update(tokens=b["tokens"].float()), "long token ids"),
        (lambda b: b.update(tokens=b["tokens"] + 64), "vocabulary"),
        (lambda b: b.update(tokens=b["tokens"][:, :, :3]), "(B, T, 4, 4)"),
        (lambda b: b.update(actions=b["actions"][..., :4]), "step_action_dim=9"),
        (lambda b: b.update(embodiment=torch.tensor([0, 2, 0])), "embodiment indices"),
        (lambda b: b.update(setting="inverse"), "'inverse'"),
        (lambda b: b.update(tokens=torch.zeros(3, 7, 4, 4, dtype=torch.long)), "max_frames=6"),
        (lambda b: b.update(actions=b["actions"].clone().fill_(float("nan"))), "NaN"),
        (lambda b: b.pop("tokens"), "batch['tokens']"),
    ],
)
def test_bad_batches_raise_naming_the_problem(mutate, needle):
    model = tiny()
    b = batch("discrete")
    mutate(b)
    with pytest.raises(ValueError, match=re.escape(needle)):
        model(b)


def test_bad_generate_arguments_raise():
    model = tiny()
    ctx, ca = frames("discrete", 2, 2), torch.randn(2, 2, A)
    with pytest.raises(ValueError, match="batch must be 1 or N=3"):
        model.generate(ctx, ca, torch.randn(3, 1, A), "arm")
    with pytest.raises(KeyError, match="unknown embodiment 'ur5'"):
        model.generate(ctx, ca, None, "ur5")
    with pytest.raises(ValueError, match="num_steps"):
        model.generate(ctx, ca, None, "arm", num_steps=0)
    with pytest.raises(ValueError, match="order"):
        model.generate(ctx, ca, None, "arm", order="raster")
    with pytest.raises(ValueError, match="temperature"):
        model.generate(ctx, ca, None, "arm", temperature=-1.0)
    with pytest.raises(ValueError, match="context_actions has 1 steps"):
        model.generate(ctx, ca[:, :1], None, "arm")
    with pytest.raises(ValueError, match="discrete variant"):
        tiny("continuous").generate(frames("continuous", 1, 2), ca[:1], None, "arm", order="confidence")


def test_patchify_round_trip_and_grouping():
    lat = torch.randn(2, 3, 8, 8, 4)  # (B, T, H, W, c) VAE latents
    tok = patchify_latents(lat, 2)
    assert tok.shape == (2, 3, 4, 4, 16)
    torch.testing.assert_close(tok[0, 0, 1, 2].reshape(2, 2, 4), lat[0, 0, 2:4, 4:6])  # one 2x2 patch
    assert torch.equal(unpatchify_latents(tok, 2), lat)
    with pytest.raises(ValueError, match="not divisible by patch 3"):
        patchify_latents(lat, 3)


@pytest.mark.parametrize("context", [2, 5])  # 5 = a full cache: the commit evicts a slot
def test_fused_advance_equals_commit_then_predict(context):
    model = tiny()
    ctx, prev = frames("discrete", 2, context), torch.randn(2, context, A)
    cache = model.append_frames(model.init_cache(1), ctx, prev, "arm")
    frame, a_in, a = frames("discrete", 2, 1, seed=9)[:, 0], torch.randn(2, A), torch.randn(2, A)
    fused = model.advance(cache, frame, a_in, a, "arm", generator=torch.Generator().manual_seed(4))
    committed = model.append_frame(cache, frame, a_in, "arm")
    nxt, acts = model.predict_next(committed, a, "arm", generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(fused[0].k, committed.k, atol=1e-5, rtol=1e-5)
    assert torch.equal(fused[0].valid, committed.valid)
    assert torch.equal(fused[1], nxt)
    torch.testing.assert_close(fused[2], acts, atol=1e-5, rtol=1e-5)


def test_cache_is_invariant_to_absolute_position():
    # Rotary on absolute frame indices: a cache that has run for ~6 days at 2 Hz must give
    # the same outputs as a fresh one (only relative positions matter, in float32 precision).
    model = tiny()
    x, prev = frames("discrete", 1, 4), torch.randn(1, 4, A)
    fresh = model.init_cache(1)
    old = dataclasses.replace(fresh, pos=torch.tensor(10**6))
    mask = torch.zeros(1, 16, dtype=torch.bool)
    emb = torch.zeros(1, dtype=torch.long)
    outs = []
    for cache in (fresh, old):
        cache = model.append_frames(cache, x[:, :3], prev[:, :3], "arm")
        outs.append(model.step(x[:, 3].flatten(1, 2), mask, prev[:, 3], emb, cache)[0])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)


def test_rotary_is_exact_at_large_positions_in_float32():
    # The digit tables give the float64 rotation to float32 precision at any frame index
    # (where pos * freq in float32 would be off by radians), bit-exactly below 256.
    rot = Rotary(32)
    pos = torch.tensor([0, 3, 15, 255, 256, 10**6, 10**6 + 7, 2**31 + 12345])
    x = torch.randn(len(pos), 32, dtype=torch.float64)
    freqs = 10000.0 ** (-torch.arange(16, dtype=torch.float64) / 16)
    ang = torch.remainder(pos.double()[:, None] * freqs, 2 * math.pi)
    x1, x2 = x[:, :16], x[:, 16:]
    ref = torch.cat([x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()], dim=-1)
    got = rot(x.float(), pos)
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=0)
    cos, sin = ang[:4].cos().float(), ang[:4].sin().float()
    xf1, xf2 = x[:4, :16].float(), x[:4, 16:].float()
    assert torch.equal(got[:4], torch.cat([xf1 * cos - xf2 * sin, xf1 * sin + xf2 * cos], dim=-1))
    # Positive control: the naive float32 angle is far off at 10^6 frames.
    naive = pos[5].float() * freqs.float()
    assert (torch.remainder(naive.double(), 2 * math.pi) - ang[5]).abs().max() > 1e-3


def test_candidates_with_their_own_first_action():
    # MPC: one shared context, N candidates that differ from the first action on.
    model = tiny()
    ctx = frames("discrete", 1, 3)
    ca = torch.randn(4, 3, A)
    fa = torch.randn(4, 1, A)
    outs = [
        model.generate(ctx, ca, fa, "arm", generator=torch.Generator().manual_seed(0), use_cache=c)
        for c in (True, False)
    ]
    assert outs[0].frames.shape == (4, 2, 4, 4)
    assert torch.equal(outs[0].frames, outs[1].frames)
    one = model.generate(ctx, ca[1:2], fa[1:2], "arm", generator=torch.Generator().manual_seed(0))
    assert one.frames.shape == (1, 2, 4, 4)


def test_narrow_embodiment_needs_only_its_own_action_width():
    # A batch of the narrow robot (step width 2) next to a wide one (6): its actions need not
    # be padded to 6 by the caller, and the result is that of the zero-padded call.
    narrow = EmbodimentSpec("gripper", 1, 4.0)  # stride 2 -> step dim 2
    wide = EmbodimentSpec("arm6", 3, 4.0)  # stride 2 -> step dim 6
    torch.manual_seed(0)
    model = HMA(make_config("hma_tiny", (wide, narrow)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    x, a = frames("discrete", 2, 4), torch.randn(2, 4, 2)
    a[1, 2] = float("nan")  # an unknown action stays unknown after padding
    pad = torch.nn.functional.pad(a, (0, 4))
    emb = torch.ones(2, dtype=torch.long)

    def loss(actions):
        torch.manual_seed(3)
        key = {"tokens": x, "actions": torch.nan_to_num(actions), "embodiment": emb, "setting": "full"}
        return model(key)[0]

    assert torch.equal(loss(a), loss(pad))
    assert torch.equal(model.outputs(x, a, "gripper")["hidden"], model.outputs(x, pad, "gripper")["hidden"])

    def gen(actions):
        g = torch.Generator().manual_seed(5)
        return model.generate(x[:1, :3], actions[:1, :3], actions[:, 3:], "gripper", generator=g)

    g_narrow, g_pad = gen(a), gen(pad)
    assert torch.equal(g_narrow.frames, g_pad.frames)
    assert g_narrow.actions.shape == (2, 2, 2)
    assert torch.equal(g_narrow.actions, g_pad.actions[..., :2])
    cache = model.append_frames(model.init_cache(1), x[:1, :2], a[:1, :2], "gripper")
    assert torch.equal(cache.k, model.append_frames(model.init_cache(1), x[:1, :2], pad[:1, :2], "gripper").k)
    nxt = [model.predict_next(cache, b[:1, 2], "gripper", generator=torch.Generator().manual_seed(1)) for b in (a, pad)]
    assert torch.equal(nxt[0][0], nxt[1][0])
    adv = [
        model.advance(cache, x[:1, 2], b[:1, 2], b[:1, 3], "gripper", generator=torch.Generator().manual_seed(1))
        for b in (a, pad)
    ]
    assert torch.equal(adv[0][0].k, adv[1][0].k)
    assert torch.equal(adv[0][1], adv[1][1])
    # Too narrow for the embodiment is still refused, naming the width it needs.
    with pytest.raises(ValueError, match="step_action_dim=2"):
        model.predict_next(cache, torch.randn(1, 1), "gripper")
    with pytest.raises(ValueError, match="step_action_dim=6"):
        model.predict_next(cache, torch.randn(1, 2), "arm6")


def test_continuous_decoding_samples_each_token_once():
    # As in MAR: a decoding step runs the diffusion head for the tokens it reveals, not for
    # every still-masked token, so over M steps each token is sampled exactly once.
    model = tiny("continuous")
    rows = []
    model.diffusion.net.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    cache = model.append_frames(model.init_cache(1), frames("continuous", 1, 2), torch.randn(1, 2, A), "arm")
    nxt, _ = model.predict_next(cache, torch.randn(3, A), "arm", num_steps=3)
    steps = model.config.diff_sample_steps
    assert len(rows) == 3 * steps  # M decoding steps, each a DDIM loop
    S = model.num_image_tokens
    schedule = [S, *unmask_schedule(S, 3)]
    assert rows[::steps] == [3 * (a - b) for a, b in itertools.pairwise(schedule)]  # batch 3
    assert sum(rows[::steps]) == 3 * S
    assert torch.isfinite(nxt).all()
    assert nxt.abs().amax(dim=-1).gt(0).all()  # every token was filled in (none left at zero)
