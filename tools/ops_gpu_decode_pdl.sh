#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: the split-K decode kernel with programmatic dependent launch
# (HybridGemmArgs::pdl). Validates every kernel (hg_dev validate; grid -7 = PDL with x written by the kernel just
# before), shows that the check catches a missing griddepcontrol.wait (a copy of the kernel built without it must
# fail grid -7), memchecks the small case, then times bench_ops --decode at M = 1 and 16 (hybrid and hybrid-pdl rows
# beside cuBLAS). Logs and tables under $OUT.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Ibench"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$SECONDS
rm -rf /tmp/nowait && mkdir -p /tmp/nowait && cp -r src /tmp/nowait/
sed -i 's/hg::pdl_grid_dependency_wait();/(void)0;/' /tmp/nowait/src/ops/hybrid_decode.cuh
$NVCC -Isrc -Xptxas -v -c src/ops/hybrid_gemm.cu -o /tmp/hg.o >"$OUT/build_lib.log" 2>&1 || { tail -30 "$OUT/build_lib.log"; exit 1; }
$NVCC -Isrc dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev >"$OUT/build_dev.log" 2>&1 &
$NVCC -Isrc bench/bench_ops.cu /tmp/hg.o -lcublas -o /tmp/bench_ops >"$OUT/build_bench.log" 2>&1 &
( $NVCC -I/tmp/nowait/src -c /tmp/nowait/src/ops/hybrid_gemm.cu -o /tmp/hg_nowait.o &&
  $NVCC -I/tmp/nowait/src dev/kernels/hybrid_gemm.cu /tmp/hg_nowait.o -lcublas -o /tmp/hg_dev_nowait ) \
  >"$OUT/build_nowait.log" 2>&1 &
wait
grep -A2 "decode_kernel" "$OUT/build_lib.log" | grep -E "registers|spill" | sort | uniq -c
echo "build ${SECONDS}s"
timeout 170 /tmp/hg_dev validate >"$OUT/validate.txt" 2>&1; echo "validate rc=$? ($((SECONDS - T0))s)"
grep -E "FAIL|validation:|launch failed" "$OUT/validate.txt" | head -8
timeout 60 /tmp/hg_dev_nowait small -7 >"$OUT/validate_nowait.txt" 2>&1
echo "negative control (no griddepcontrol.wait, grid -7) rc=$? :: $(grep -c FAIL "$OUT/validate_nowait.txt") FAIL lines; \
$(grep validation: "$OUT/validate_nowait.txt")"
timeout 60 compute-sanitizer --tool memcheck /tmp/hg_dev small >"$OUT/sanitizer.txt" 2>&1
echo "memcheck rc=$? :: $(grep -E 'ERROR SUMMARY|validation:' "$OUT/sanitizer.txt" | tr '\n' ' ')"
timeout $((520 - (SECONDS - T0))) /tmp/bench_ops --decode --ms 1,16 --out "$OUT/bench_decode" \
  >"$OUT/bench_summary.md" 2>"$OUT/bench.log"
echo "bench rc=$? ($((SECONDS - T0))s)"
grep -E "VALIDATION" "$OUT/bench.log" | head -5
cat "$OUT/bench_summary.md"
