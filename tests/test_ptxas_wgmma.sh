#!/usr/bin/env bash
# The wgmma kernels' pipelines, as ptxas builds them for sm_90a: where a non-wgmma instruction may write a wgmma's
# accumulators inside its pipeline stage, ptxas serialises every wgmma of that kernel (waits after each) and only
# says so in -v output (C7514, C7515, C7520: "wgmma.mma_async instructions are serialized"). Session 37's first
# cut-tail build did that and ran 0.6-0.8x the kernel it was meant to speed up, with every check passing. This fails
# on any such message for the library's kernels. Usage: test_ptxas_wgmma.sh NVCC SOURCE_DIR
set -u -o pipefail
nvcc=$1
src=$2
log=$(mktemp)
trap 'rm -f "$log" "$log.o"' EXIT
"$nvcc" -std=c++17 -O3 --expt-relaxed-constexpr -gencode arch=compute_90a,code=sm_90a -I"$src/src" \
  -Xptxas -v -c "$src/src/ops/hybrid_gemm.cu" -o "$log.o" >"$log" 2>&1 \
  || { echo "error: nvcc failed on src/ops/hybrid_gemm.cu:"; grep -E "error" "$log" | head -5; exit 1; }
grep -q "Compiling entry function '.*hybrid_prefill_sorted_kernel" "$log" \
  || { echo "error: no ptxas -v output for hybrid_prefill_sorted_kernel (wgmma not built?)"; exit 1; }
if grep -E "wgmma.mma_async instructions are serialized" "$log"; then
  echo "FAIL: ptxas serialises wgmma in the kernels above"
  exit 1
fi
echo "ok: no serialised wgmma in $(grep -c 'Compiling entry function' "$log") kernels"
