#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: the decode-attention versions of dev/kernels/decode_attn.cu (v1, the
# kernel reverted in session 18; v2, two phases with four rows in flight per warp), each checked against a float64
# reference with the unfilled cache slots NaN, then timed against the filled KV bytes' HBM bound. Arguments: cases
# "B H Hk D len cap" ... (default: LLaMA-2-7B and LLaMA-3-8B heads, batch 1 and 16, contexts 80, 2048, 8192).
# v3 is the library kernel (launch_decode_attention). Then the baseline the model ran before session 26, timed in
# PyTorch on the same cases: the static decode step's SDPA over the whole capacity under a mask, grouped-query heads
# folded into query rows of their kv head (model.cc attention()), and the output copied to token-major order.
# Env: TESTS="test_a test_b" also configures build-gpu, builds those ctest executables and runs them first.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
if [ -n "${TESTS:-}" ]; then
  t0=$(date +%s)
  cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
    -DPATCHLLM_BUILD_TESTS=ON -DPATCHLLM_PCRE2_INCLUDE=$PWD/.deps/include -DCMAKE_CUDA_ARCHITECTURES=90a \
    > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
  ninja -C build-gpu $TESTS > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
  run_tests "$TESTS"
fi
# Two builds: the library's kernel as it is, and without its one-round-ahead loads (PATCHLLM_ATTN_NO_PREFETCH).
for v in "" NO_PREFETCH; do
  nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench \
    ${v:+-DPATCHLLM_ATTN_$v} dev/kernels/decode_attn.cu src/ops/layer_kernels.cu -o /tmp/decode_attn$v \
    >"$OUT/build_attn.txt" 2>&1 || { tail -20 "$OUT/build_attn.txt"; exit 1; }
  echo "== build ${v:-default}" | tee -a "$OUT/decode_attn.txt"
  timeout 300 /tmp/decode_attn$v "$@" | tee -a "$OUT/decode_attn.txt"
done
echo "rc=$? failures: $(grep -c FAIL "$OUT/decode_attn.txt")"
python3 - "$@" <<'PY' | tee "$OUT/decode_attn_sdpa.txt"
import sys, torch, torch.nn.functional as F
a = list(map(int, sys.argv[1:]))
cases = [a[i:i + 6] for i in range(0, len(a), 6)] or [
    (B, 32, Hk, 128, n, n + 64) for B in (1, 16) for Hk in (32, 8) for n in (80, 2048, 8192)] + [
    (1, 14, 2, 64, 2048, 2112), (4, 4, 1, 256, 1000, 1024)]
for B, H, Hk, D, n, cap in cases:
    g = H // Hk
    rot = max(2, min(16, 200_000_000 // (2 * B * Hk * cap * D * 2) + 1))
    q = torch.randn(B, 1, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2)  # as rope_qk_to_cache's
    ks = [torch.randn(B, Hk, cap, D, device="cuda", dtype=torch.bfloat16) for _ in range(rot)]
    vs = [torch.randn(B, Hk, cap, D, device="cuda", dtype=torch.bfloat16) for _ in range(rot)]
    mask = torch.zeros(B, 1, 1, cap, device="cuda", dtype=torch.bfloat16)
    mask[..., n:] = float("-inf")
    def step(r):
        k, v = ks[r], vs[r]
        qq = q.reshape(B, Hk, g, D) if g > 1 else q
        a = F.scaled_dot_product_attention(qq, k, v, attn_mask=mask)
        return a.reshape(B, H, 1, D).transpose(1, 2).reshape(B, 1, H * D)
    for cudnn in (False, True):  # generation keeps cuDNN out (SdpaCudnnOff); bench_model leaves it in
      torch.backends.cuda.enable_cudnn_sdp(cudnn)
      step(0); torch.cuda.synchronize()
      times = []
      for rep in range(15):
          s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
          s.record()
          for r in range(rot): step(r)
          e.record(); torch.cuda.synchronize()
          times.append(s.elapsed_time(e) * 1e3 / rot)
      us = sorted(times)[len(times) // 2]
      kv = 2.0 * B * Hk * n * D * 2
      print(f"SDPA{'+cuDNN' if cudnn else ''} (model's way) B={B} H={H} Hk={Hk} D={D} len={n} cap={cap}: {us:8.2f} us  {kv / us / 1e3:7.1f} GB/s of filled KV")
PY
