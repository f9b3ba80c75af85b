"""The CUDA path, where a CUDA GPU is visible to torch (skipped elsewhere, CI included).

``scripts/gpu_check.sh`` runs these on a GPU machine. Each compares the GPU with the CPU on the
same weights and inputs: fp32 on both, TF32 off, so they agree to float rounding; decoding is
greedy (temperature 0) in confidence order, so no random stream (they differ between devices)
enters the comparison. The quality gate is the one fast paths are held to: token agreement
>= 99%, or frame PSNR >= 40 dB.
"""

import json

import numpy as np
import pytest
import torch
from tiny_models import tiny_model

from hma_ros.model.checkpoint import save_checkpoint
from hma_ros.model.config import EmbodimentSpec
from hma_ros.runtime import throughput
from hma_ros.runtime.robot_config import load_robot_config
from hma_ros.runtime.runner import WorldModelRunner

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch"),
]

ARM = EmbodimentSpec("arm", action_dim=2, control_hz=4.0)
GREEDY = {"temperature": 0.0, "order": "confidence"}


@pytest.fixture(autouse=True)
def _fp32_matmuls():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("variant", ["discrete", "continuous"])
def test_one_causal_pass_matches_the_cpu(variant):
    model, _ = tiny_model(variant, [ARM])
    c = model.config
    g = torch.Generator().manual_seed(0)
    if variant == "discrete":
        frames = torch.randint(0, c.vocab_size, (2, 4, c.tokens_h, c.tokens_w), generator=g)
    else:
        frames = torch.randn(2, 4, c.tokens_h, c.tokens_w, c.token_dim, generator=g)
    acts = torch.randn(2, 4, ARM.step_action_dim, generator=g)
    with torch.no_grad():
        cpu = model.outputs(frames, acts, "arm")
        gpu = model.to("cuda").outputs(frames.cuda(), acts.cuda(), "arm")
    torch.testing.assert_close(gpu["hidden"].cpu(), cpu["hidden"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu["actions"].cpu(), cpu["actions"], atol=1e-4, rtol=1e-4)
    if variant == "discrete":
        for lg_gpu, lg_cpu in zip(gpu["logits"], cpu["logits"], strict=True):
            agree = (lg_gpu.argmax(-1).cpu() == lg_cpu.argmax(-1)).float().mean().item()
            assert agree >= 0.99


def _runner(folder, device, **kwargs):
    opts = {} if device == "cpu" else {"device": device}
    r = WorldModelRunner.from_checkpoint(folder, "arm", backend_options=opts, **kwargs)
    assert r.device.type == device
    throughput.observe_scene(r, 4)
    return r


def _tiny_checkpoint(variant, tmp_path):
    model, tok = tiny_model(variant, [ARM])
    folder = save_checkpoint(tmp_path / variant, model)
    tok.save(folder / "tokenizer")
    return folder


def test_runner_live_prediction_and_rollout_match_the_cpu(tmp_path):
    folder = _tiny_checkpoint("discrete", tmp_path)
    cand = np.random.default_rng(1).normal(size=(8, 3, ARM.step_action_dim)).astype(np.float32)
    goal = throughput.scene(1)[0]
    out = {}
    for device in ("cpu", "cuda"):
        r = _runner(folder, device, **GREEDY)
        out[device] = (r.predict(3), r.rollout(cand, goal=goal))
    (p_cpu, roll_cpu), (p_gpu, roll_gpu) = out["cpu"], out["cuda"]
    assert psnr(p_gpu.frames, p_cpu.frames) >= 40
    assert psnr(roll_gpu.frames, roll_cpu.frames) >= 40
    np.testing.assert_allclose(roll_gpu.actions, roll_cpu.actions, atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(roll_gpu.costs, roll_cpu.costs, atol=1e-4)


def test_continuous_runner_on_the_gpu_is_seeded_and_finite(tmp_path):
    """The diffusion head draws noise from the device's generator (CPU and CUDA streams differ),
    so the continuous variant is checked on the GPU alone: same seed, same frames; finite."""
    folder = _tiny_checkpoint("continuous", tmp_path)
    r = _runner(folder, "cuda")
    cand = np.random.default_rng(1).normal(size=(8, 3, ARM.step_action_dim)).astype(np.float32)
    a, b = r.rollout(cand, seed=3), r.rollout(cand, seed=3)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.frames.shape == (8, 3, *r.image_size, 3)
    assert np.isfinite(a.actions).all()
    p = r.predict(2)
    assert p.frames.shape == (2, *r.image_size, 3)
    assert np.isfinite(p.actions).all()


def test_shipped_model_on_cuda_passes_the_quality_gate():
    """The franka model the node loads: 4 predicted frames and a 32 x 8 rollout on the GPU against
    the CPU; token agreement of the predicted frames (re-encoded) >= 99% or PSNR >= 40 dB."""
    robot = load_robot_config("franka")
    out = {}
    for device in ("cpu", "cuda"):
        opts = {} if device == "cpu" else {"device": "cuda"}
        r = WorldModelRunner.from_checkpoint(robot.checkpoint_path(), robot, backend_options=opts, **GREEDY)
        throughput.observe_scene(r, 4)
        cand = np.random.default_rng(2).normal(scale=0.01, size=(32, 8, r.step_action_dim)).astype(np.float32)
        out[device] = (r, r.predict(4), r.rollout(cand))
    (r_cpu, p_cpu, roll_cpu), (_, p_gpu, roll_gpu) = out["cpu"], out["cuda"]
    with torch.no_grad():
        encode = r_cpu.tokenizer.encode
        agree = (encode(roll_cpu.frames) == encode(roll_gpu.frames)).float().mean().item()
    frames_psnr = psnr(roll_gpu.frames, roll_cpu.frames)
    gate = {"token_agreement": agree, "rollout_psnr_db": frames_psnr, "live_psnr_db": psnr(p_gpu.frames, p_cpu.frames)}
    print(json.dumps(gate))
    assert agree >= 0.99 or frames_psnr >= 40, (agree, frames_psnr)


def test_onnxruntime_cuda_provider_matches_torch_on_the_gpu(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDAExecutionProvider ({ort.get_available_providers()})")
    model, tok = tiny_model("discrete", [ARM])
    folder = save_checkpoint(tmp_path / "ckpt", model)
    tok.save(folder / "tokenizer")
    out = {}
    for backend in ("torch", "onnxruntime"):
        opts = {"device": "cuda"}
        r = WorldModelRunner.from_checkpoint(folder, "arm", backend=backend, backend_options=opts, **GREEDY)
        throughput.observe_scene(r, 4)
        cand = np.random.default_rng(1).normal(size=(4, 3, ARM.step_action_dim)).astype(np.float32)
        out[backend] = r.rollout(cand)
    assert psnr(out["onnxruntime"].frames, out["torch"].frames) >= 40
