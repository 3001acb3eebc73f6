#!/usr/bin/env bash
# On the GPU machine: build patchllm against the CUDA LibTorch of the installed PyTorch, cross-check logits with HF
# transformers, and benchmark a LLaMA-2-7B-shaped random bf16 checkpoint beside HF. Results under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DPATCHLLM_BUILD_TESTS=OFF \
  -DPATCHLLM_PCRE2_INCLUDE=$PWD/.deps/include -DCMAKE_CUDA_ARCHITECTURES=90a > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
ninja -C build-gpu patchllm bench_model > "$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
[ "${SKIP_XCHECK:-0}" = 1 ] || python3 tools/crosscheck_hf.py build-gpu "$OUT" 2>&1 | tee "$OUT/crosscheck.log" | grep -v Warning
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  python3 tools/make_random_checkpoint.py llama2-7b /tmp/llama2-7b --dtype bfloat16
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
  ./build-gpu/bench/bench_model -m /tmp/llama2-7b --device cuda --prefill 2048 --batches 1,16 --decode 64 | tee "$OUT/bench_patchllm.jsonl"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
  python3 tools/bench_hf.py /tmp/llama2-7b 2048 64 2>/dev/null | tee "$OUT/bench_hf.jsonl"
  nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi
