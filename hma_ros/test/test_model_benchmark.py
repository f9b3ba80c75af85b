"""The model benchmark's plumbing on the tiny preset: rows, paired speed-ups, FLOPs, targets.

Timings are printed and written, never asserted (the brief: speed is checked by benchmark
scripts, not timed tests); what is pinned is what the JSON holds and the FLOP accounting.
"""

from __future__ import annotations

import json

from hma_ros.model import benchmark


def test_benchmark_writes_paired_rows_and_targets(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--presets", "hma_tiny", "--variants", "discrete", "--quick", "--candidates", "2", "--out", str(out)]
    benchmark.main(argv)
    result = json.loads(out.read_text())
    rows = result["results"]
    # 2 batches x 2 contexts x (cached, re-forward)
    assert {(r["batch"], r["context"], r["kv_cache"]) for r in rows} == {
        (b, c, k) for b in (1, 2) for c in ("4+1", "5+1") for k in (True, False)
    }
    for r in rows:
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
        "hma_tiny/discrete cache speed-up at 5+1, batch 1 (>= 5x)",
        "hma_tiny/discrete cache speed-up at 5+1, batch 2 (>= 5x)",
    }
    assert result["params"]["hma_tiny/discrete"]["trunk"] > 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed
    assert "target hma_tiny/discrete" in printed
