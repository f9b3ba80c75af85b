"""The model benchmark's plumbing on the tiny preset: rows, paired speed-ups, FLOPs, targets.

Timings are printed and written, never asserted (the brief: speed is checked by benchmark
scripts, not timed tests); what is pinned is what the JSON holds and the FLOP accounting.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from hma_ros.model import benchmark
from hma_ros.model.hma import HMA
from hma_ros.model.presets import make_config


def test_benchmark_writes_paired_rows_and_targets(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--presets", "hma_tiny", "--variants", "discrete", "--quick", "--candidates", "2", "--out", str(out)]
    # --compile eager: dynamo traces the trunk without inductor (the plumbing, in seconds).
    benchmark.main([*argv, "--compile", "eager"])
    result = json.loads(out.read_text())
    compiled = [r for r in result["results"] if r["engine"] == "compiled-eager"]
    rows = [r for r in result["results"] if r["engine"] == "eager"]
    assert len(rows) + len(compiled) == len(result["results"])
    # 2 batches x 2 contexts x (cached, re-forward); compiled at the full context only
    assert {(r["batch"], r["context"], r["kv_cache"]) for r in rows} == {
        (b, c, k) for b in (1, 2) for c in ("4+1", "5+1") for k in (True, False)
    }
    assert {(r["batch"], r["context"], r["kv_cache"]) for r in compiled} == {
        (b, "5+1", k) for b in (1, 2) for k in (True, False)
    }
    for r in rows + compiled:
        assert r["ms_per_frame"] > 0
        assert r["gflops_per_frame"] > 0
        assert ("speedup_vs_reforward" in r) == r["kv_cache"]

    def flops(batch, context, cached):
        (row,) = [r for r in rows if (r["batch"], r["context"], r["kv_cache"]) == (batch, context, cached)]
        return row["gflops_per_frame"]

    # The cache's point: a frame costs one frame of compute, the re-forward a whole window,
    # so the cached FLOPs do not grow with the context and the re-forward's do.
    assert flops(1, "4+1", True) == flops(1, "5+1", True)
    assert flops(1, "5+1", False) > flops(1, "4+1", False) > flops(1, "4+1", True)
    assert set(result["targets"]) == {
        f"hma_tiny/discrete cache speed-up at 5+1, batch {b} (>= 5x){tag}"
        for b in (1, 2)
        for tag in ("", " [compiled-eager]")
    }
    assert result["compile"] == "eager"
    assert result["params"]["hma_tiny/discrete"]["trunk"] > 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed
    assert "target hma_tiny/discrete" in printed


def test_compiled_trunk_is_the_same_model():
    """The compiled rows time the same computation: the twin samples the same frames."""
    torch.manual_seed(0)
    model = HMA(make_config("hma_tiny", [benchmark.EMBODIMENT])).eval()
    with torch.no_grad():  # no zero-initialised heads: the frames must depend on the trunk
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    twin = benchmark.compiled_trunk(model, "eager")
    assert twin._forward_frames is not model._forward_frames
    cache = model.init_cache(1)
    frame = torch.randint(0, model.config.vocab_size, (2, 4, 4))
    a_in, act = torch.randn(2, 80), torch.randn(2, 80)
    outs = [m.advance(cache, frame, a_in, act, 0, generator=torch.Generator().manual_seed(3)) for m in (model, twin)]
    for x, y in zip(outs[0][1:], outs[1][1:], strict=True):
        assert torch.equal(x, y)
    assert torch.allclose(outs[0][0].k, outs[1][0].k, atol=1e-6)


def test_attention_is_counted_on_the_cpu():
    """torch's FlopCounterMode has no formula for the CPU flash-attention kernel: the benchmark
    registers one (Q K^T and A V, 2 FLOPs per multiply-add), with and without a mask."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, s, 8, generator=g) for s in (16, 24, 24))  # the kernel wants one head dim
    mask = torch.rand(16, 24, generator=g) > 0.3
    expected = 2 * 2 * 4 * 16 * 24 * (8 + 8)
    for kwargs in ({}, {"attn_mask": mask}):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # the CPU flash kernel, as the model's frames use
            flops = benchmark.count_flops(lambda kw=kwargs: F.scaled_dot_product_attention(q, k, v, **kw))
        assert flops == expected


def test_model_flops_equal_those_of_the_math_attention_kernel():
    """Counted through the fused kernel (the registered formula) or through the math kernel
    (plain matrix products, which torch counts itself), a frame costs the same FLOPs."""
    torch.manual_seed(0)
    model = HMA(make_config("hma_tiny", [benchmark.EMBODIMENT])).eval()
    for cached in (True, False):
        run = benchmark.frame_fn(model, 2, 4, cached, 2, torch.device("cpu"))
        fused = benchmark.count_flops(run)
        with sdpa_kernel([SDPBackend.MATH]):
            math = benchmark.count_flops(run)
        assert fused == math > 0
