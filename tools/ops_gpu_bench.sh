#!/usr/bin/env bash
# GPU-machine benchmark of the hybrid kernels against cuBLAS and cuSPARSELt (found in the Python tree if present).
# Usage (repo root, through the device tool): bash tools/ops_gpu_bench.sh [--quick]. Results under $OUT.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_common.sh"
EXTRA=$(cusparselt_flags)
[ -n "$EXTRA" ] && echo "cuSPARSELt: $EXTRA" || echo "cuSPARSELt not found: baseline skipped"
nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench \
  bench/bench_ops.cu src/ops/hybrid_gemm.cu -lcublas $EXTRA -o /tmp/bench_ops >"$OUT/build_bench.log" 2>&1 \
  || { tail -20 "$OUT/build_bench.log"; exit 1; }
/tmp/bench_ops "$@" --out "$OUT/bench_ops" 2>"$OUT/bench_ops.log"
rc=$?
grep -E "validat|cuSPARSELt" "$OUT/bench_ops.log" | head -40
exit $rc
