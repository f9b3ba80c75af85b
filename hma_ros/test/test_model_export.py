"""The per-frame step exports to ONNX (cache as explicit tensors) and ONNX Runtime matches torch."""

import numpy as np
import pytest
import torch

from hma_ros.model import HMA, EmbodimentSpec, make_config
from hma_ros.model.hma import FrameStep

ort = pytest.importorskip("onnxruntime")

EMBS = (EmbodimentSpec("arm", 3, 6.0), EmbodimentSpec("pusher", 2, 4.0))
NAMES = ["inputs", "token_mask", "prev_action", "cache_k", "cache_v", "cache_valid", "cache_pos"]


@pytest.mark.parametrize("variant", ["discrete", "continuous"])
def test_frame_step_onnx_matches_torch(tmp_path, variant):
    torch.manual_seed(0)
    model = HMA(make_config("hma_tiny", EMBS, variant=variant)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ctx = torch.randint(0, 64, (1, 2, 4, 4)) if variant == "discrete" else torch.randn(1, 2, 4, 4, 4)
    ctx_prev = torch.randn(1, 2, 9)  # the actions that produced the context frames
    cache = model.append_frames(model.init_cache(1), ctx, ctx_prev, "pusher")
    inputs = torch.randint(0, 64, (1, 16)) if variant == "discrete" else torch.randn(1, 16, 4)
    mask = torch.rand(1, 16) < 0.5
    args = (inputs, mask, torch.randn(1, 9), cache.k, cache.v, cache.valid, cache.pos)
    step = FrameStep(model, "pusher").eval()
    with torch.no_grad():
        expected = step(*args)
    path = tmp_path / "step.onnx"
    torch.onnx.export(step, args, str(path), input_names=NAMES, dynamo=False, opset_version=17)
    got = ort.InferenceSession(str(path)).run(None, {n: a.numpy() for n, a in zip(NAMES, args, strict=True)})
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=1e-4)
    # The exported step is the model's step: its logits/hidden equal a full causal forward.
    prev = torch.cat([ctx_prev, args[2][:, None]], 1)
    seq = torch.cat([ctx, inputs.reshape(1, 1, 4, 4, *inputs.shape[2:])], 1)
    tm = torch.cat([torch.zeros(1, 2, 16, dtype=torch.bool), mask[:, None]], 1)
    full = model.outputs(seq, prev, "pusher", token_mask=tm)
    torch.testing.assert_close(full["actions"][:, -1], expected[-3], atol=1e-5, rtol=1e-5)
