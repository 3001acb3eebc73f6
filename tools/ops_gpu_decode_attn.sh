#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: the decode-attention versions of dev/kernels/decode_attn.cu (v1, the
# kernel reverted in session 18; v2, two phases with four rows in flight per warp), each checked against a float64
# reference with the unfilled cache slots NaN, then timed against the filled KV bytes' HBM bound. Arguments: cases
# "B H Hk D len cap" ... (default: LLaMA-2-7B and LLaMA-3-8B heads, batch 1 and 16, contexts 80, 2048, 8192).
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench \
  dev/kernels/decode_attn.cu -o /tmp/decode_attn >"$OUT/build.txt" 2>&1 || { tail -20 "$OUT/build.txt"; exit 1; }
timeout 500 /tmp/decode_attn "$@" | tee "$OUT/decode_attn.txt"
echo "rc=$? failures: $(grep -c FAIL "$OUT/decode_attn.txt")"
