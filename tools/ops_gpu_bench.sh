#!/usr/bin/env bash
# GPU-machine benchmark of the hybrid kernels against cuBLAS and cuSPARSELt (found in the Python tree if present).
# Usage (repo root, through the device tool): bash tools/ops_gpu_bench.sh [--quick]. Results under $OUT.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
CSL=$(python3 -c "import nvidia.cusparselt as m,os;print(os.path.dirname(m.__file__))" 2>/dev/null || true)
[ -z "$CSL" ] && CSL=$(find / -path /proc -prune -o -type d -path '*site-packages/nvidia/cusparselt' -print 2>/dev/null | head -1)
EXTRA=""
if [ -n "$CSL" ] && [ -f "$CSL/include/cusparseLt.h" ]; then
  LIB=$(ls "$CSL"/lib/libcusparseLt.so* | head -1)
  EXTRA="-DPATCHLLM_HAVE_CUSPARSELT -I$CSL/include -L$CSL/lib -l:$(basename "$LIB") -Xlinker -rpath=$CSL/lib"
  echo "cuSPARSELt from $CSL ($(basename "$LIB"))"
else
  echo "cuSPARSELt not found: baseline skipped"
fi
nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench \
  bench/bench_ops.cu src/ops/hybrid_gemm.cu -lcublas $EXTRA -o /tmp/bench_ops >"$OUT/build_bench.log" 2>&1 \
  || { tail -20 "$OUT/build_bench.log"; exit 1; }
/tmp/bench_ops "$@" --out "$OUT/bench_ops" 2>"$OUT/bench_ops.log"
rc=$?
grep -E "validat|cuSPARSELt" "$OUT/bench_ops.log" | head -40
exit $rc
