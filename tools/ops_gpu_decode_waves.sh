#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: the decode k-split rule (decode_split_waves, src/ops/hybrid_split.h)
# against fixed targets of 2, 4 (the old default) and 8 CTAs per SM on every decode shape at M = 1 and 16, beside
# cuBLAS; the kernel validation (hg_dev validate) first. Logs and bench tables under $OUT.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$SECONDS
$NVCC -c src/ops/hybrid_gemm.cu -o /tmp/hg.o >"$OUT/build_lib.log" 2>&1 || { tail -30 "$OUT/build_lib.log"; exit 1; }
$NVCC dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev >"$OUT/build_dev.log" 2>&1 &
$NVCC bench/bench_ops.cu /tmp/hg.o -lcublas -o /tmp/bench_ops >"$OUT/build_bench.log" 2>&1 &
wait
echo "build ${SECONDS}s"
timeout 150 /tmp/hg_dev validate >"$OUT/validate.txt" 2>&1; echo "validate rc=$? ($((SECONDS - T0))s)"
grep -E "FAIL|validation:|launch failed" "$OUT/validate.txt" | head -8
timeout $((400 - (SECONDS - T0))) /tmp/bench_ops --decode --extra --ms 1,16 --out "$OUT/bench_decode" \
  >"$OUT/bench_summary.md" 2>"$OUT/bench.log"
echo "bench rc=$? ($((SECONDS - T0))s)"
grep -E "VALIDATION|validated" "$OUT/bench.log" | head -5
grep "^sweep" "$OUT/bench.log" | sed "s/^sweep //"
grep "^row" "$OUT/bench.log" | grep "hybrid" | sed 's/^row //' | head -70
