#!/usr/bin/env bash
# The CUDA checks of hma_ros, for a machine with an NVIDIA GPU. Never part of CI (CI has no GPU).
#
#   bash scripts/gpu_check.sh [OUT_DIR]        (default: out/gpu_check)
#
# Runs from the source tree, with no install and no ROS (torch, numpy, einops, safetensors, tqdm,
# pyyaml are enough; onnxruntime for its rows): the environment, the CUDA tests
# (hma_ros/test/test_cuda.py: GPU against CPU, the quality gate on the shipped model), the model
# benchmark on the GPU, and the shipped model's rollout throughput on the GPU and, for scale, on
# 2 CPU threads of the same machine. ONNX Runtime's CUDA provider and TensorRT get throughput rows
# where they are installed, and are reported missing where not. Everything printed goes to
# OUT_DIR/gpu_check.log; each benchmark writes its JSON beside it. The exit status is the number
# of steps that failed.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$root/out/gpu_check}" && cd "${1:-$root/out/gpu_check}" && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$root/hma_ros${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$root" || exit 1
log=$out/gpu_check.log
: > "$log"
failed=0

step() {  # step NAME COMMAND...: run it, keep its output in the log, count a failure
  local name=$1 t0 rc
  shift
  echo "== $name: $*" | tee -a "$log"
  t0=$(date +%s)
  "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc in $(($(date +%s) - t0)) s" | tee -a "$log"
  [ "$rc" -eq 0 ] || failed=$((failed + 1))
}

have() { "$py" -c "$1" > /dev/null 2>&1; }

step environment "$py" - <<'PY'
import platform, subprocess, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE VISIBLE")
try:
    import onnxruntime as ort
    print("onnxruntime", ort.__version__, ort.get_available_providers())
except ImportError as e:
    print("onnxruntime missing:", e)
try:
    import tensorrt
    print("tensorrt", tensorrt.__version__)
except ImportError as e:
    print("tensorrt missing:", e)
try:
    print(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip())
except FileNotFoundError:
    print("nvidia-smi: not found")
raise SystemExit(0 if torch.cuda.is_available() else 1)
PY
step cuda_tests "$py" -m pytest -p no:cacheprovider -o addopts= -rs -v -s hma_ros/test/test_cuda.py
step model_benchmark "$py" -m hma_ros.model.benchmark --device cuda --quick --out "$out/benchmark_model.json"
step throughput_cuda "$py" -m hma_ros.runtime.throughput --device cuda --candidates 1,8,32,128 \
  --out "$out/throughput_torch_cuda.json"
step throughput_cpu "$py" -m hma_ros.runtime.throughput --device cpu --threads 2 --candidates 1,8,32 \
  --out "$out/throughput_torch_cpu2.json"
if have "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()"; then
  step throughput_onnxruntime_cuda "$py" -m hma_ros.runtime.throughput --backend onnxruntime --device cuda \
    --candidates 1,8,32 --out "$out/throughput_onnxruntime_cuda.json"
else
  echo "== throughput_onnxruntime_cuda: skipped, onnxruntime has no CUDAExecutionProvider here" | tee -a "$log"
fi
if have "import tensorrt"; then
  step throughput_tensorrt "$py" -m hma_ros.runtime.throughput --backend tensorrt --device cuda \
    --candidates 1,8,32 --out "$out/throughput_tensorrt.json"
else
  echo "== throughput_tensorrt: skipped, tensorrt is not importable here" | tee -a "$log"
fi
echo "== gpu_check: $failed step(s) failed; log and JSON in $out" | tee -a "$log"
exit "$failed"
