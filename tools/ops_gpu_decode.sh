#!/usr/bin/env bash
# GPU-machine check + decode benchmark of the split-K hybrid kernel (hybrid_decode.cuh), one device-tool call:
# builds with plain nvcc (no CMake/LibTorch), validates against the fp32 reference (outputs NaN-poisoned, reruns
# bitwise; the previous decode kernel v3d too), memchecks the small case, then times decode shapes beside cuBLAS (and
# the persistent v1 kernel and v3d at M <= 16)
# with weights rotated past L2. Usage (repo root): bash tools/ops_gpu_decode.sh. Logs under $OUT.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
nvcc --version | tail -2
T0=$SECONDS
$NVCC -Xptxas -v -c src/ops/hybrid_gemm.cu -o /tmp/hg.o >"$OUT/build_lib.log" 2>&1 || { tail -30 "$OUT/build_lib.log"; exit 1; }
$NVCC dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev >"$OUT/build_dev.log" 2>&1 &
$NVCC bench/bench_ops.cu /tmp/hg.o -lcublas -o /tmp/bench_ops >"$OUT/build_bench.log" 2>&1 &
wait
[ -x /tmp/hg_dev ] && [ -x /tmp/bench_ops ] || { tail -20 "$OUT"/build_*.log; exit 1; }
grep -A2 "decode_kernel" "$OUT/build_lib.log" | grep -E "registers|spill" | sort | uniq -c
echo "build ${SECONDS}s"
timeout 160 /tmp/hg_dev validate >"$OUT/validate.txt" 2>&1; echo "validate rc=$? ($((SECONDS - T0))s)"
grep -E "FAIL|validation:|launch failed" "$OUT/validate.txt" | head -12
timeout 40 compute-sanitizer --tool memcheck /tmp/hg_dev small >"$OUT/sanitizer_memcheck.txt" 2>&1
echo "memcheck rc=$? :: $(grep -E 'ERROR SUMMARY|validation:' "$OUT/sanitizer_memcheck.txt" | tr '\n' ' ')"
for tool in racecheck synccheck; do
  timeout 60 compute-sanitizer --tool $tool /tmp/hg_dev small >>"$OUT/sanitizer_memcheck.txt" 2>&1
  echo "$tool rc=$? :: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_memcheck.txt" | tail -1)"
done
timeout $((420 - (SECONDS - T0))) /tmp/bench_ops --decode --extra --out "$OUT/bench_decode" >"$OUT/bench_summary.md" 2>"$OUT/bench.log"
echo "bench rc=$? ($((SECONDS - T0))s)"
grep -E "VALIDATION|validated" "$OUT/bench.log" | head -20
grep "^sweep" "$OUT/bench.log" | sed "s/^sweep //"
cat "$OUT/bench_summary.md"
[ -s "$OUT/bench_summary.md" ] || grep "^row" "$OUT/bench.log" | sed 's/^row //'
