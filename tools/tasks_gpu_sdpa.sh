#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: how long zero-shot scoring (`patchllm eval tasks`) takes with PyTorch's
# cuDNN attention kept out of SDPA (SdpaCudnnOff, the default since session 23) and with it left in
# (PATCHLLM_SDPA_CUDNN=1), alternating, on a random LLaMA-2-7B bf16 (accuracies are chance; the time is the point:
# batches are sorted by length, so nearly every batch is an attention shape not seen before).
# Needs, carried (git-ignored): .deps/tasks (a copy of ../shared/data/tasks), .deps/gpu-data/tokenizer.model (LLaMA-2,
# from ../shared/models/llama2-tokenizer) and .deps/include/pcre2.h.
# Env: OUT, TASKS (arc_easy,piqa), LIMIT (300), BATCH (8), MODES (guard cudnn guard2 cudnn2), MODEL (llama2-7b).
set -u -o pipefail
OUT=${OUT:-/tmp/tasks_out}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_common.sh"
t0=$(date +%s)
MODEL=${MODEL:-llama2-7b}
[ -d .deps/tasks ] || { echo "no .deps/tasks (copy ../shared/data/tasks there and carry .deps)"; exit 1; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
  -DPATCHLLM_BUILD_TESTS=OFF -DPATCHLLM_BUILD_BENCH=OFF -DPATCHLLM_PCRE2_INCLUDE=$PWD/.deps/include \
  -DCMAKE_CUDA_ARCHITECTURES=90a > /tmp/cmake.log 2>&1 || { tail -30 /tmp/cmake.log; exit 1; }
ninja -C build-gpu patchllm > /tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
ckpt "$MODEL" "/tmp/$MODEL" bfloat16
echo "checkpoint: $(( $(date +%s) - t0 )) s"
for mode in ${MODES:-guard cudnn guard2 cudnn2}; do
  env=""; [ "${mode%%[0-9]*}" = cudnn ] && env="PATCHLLM_SDPA_CUDNN=1"
  env $env build-gpu/patchllm eval tasks -m "/tmp/$MODEL" --device cuda --data-dir .deps/tasks \
    --tasks "${TASKS:-arc_easy,piqa}" --limit "${LIMIT:-300}" -b "${BATCH:-8}" --json "$OUT/tasks_$mode.json" \
    > "$OUT/tasks_$mode.txt" 2> /tmp/tasks_$mode.err || { tail -3 /tmp/tasks_$mode.err; exit 1; }
done
echo "total: $(( $(date +%s) - t0 )) s"
python3 - "$OUT" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(f"{sys.argv[1]}/tasks_*.json")):
    j = json.load(open(f))
    mode = f.split("tasks_")[-1][:-5]
    r = j["results"]
    print(f"  {mode:8s} cuDNN in SDPA: {'yes' if mode.startswith('cudnn') else 'no ':3s}  " +
          "  ".join(f"{t}: {v['seconds']:.2f} s (n {v['n']}, acc {v['acc,none']:.3f})" for t, v in r.items()))
PY
