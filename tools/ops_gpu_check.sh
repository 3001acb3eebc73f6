#!/usr/bin/env bash
# GPU-machine check of the hybrid kernels (run through the device tool from the repo root): builds the dev bench with
# plain nvcc, probes the mma.sp fragment layouts, validates against the fp32 reference, runs compute-sanitizer on a
# small case, and times v2. Logs go to $OUT (default /tmp/ops_out).
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
$NVCC -Xptxas -v dev/kernels/hybrid_gemm.cu src/ops/hybrid_gemm.cu -lcublas -o /tmp/hg_dev >"$OUT/build_dev.log" 2>&1 \
  || { tail -30 "$OUT/build_dev.log"; exit 1; }
grep -E "registers|spill" "$OUT/build_dev.log" | sort | uniq -c | head -12
/tmp/hg_dev probe 2>&1 | tee "$OUT/probe.txt"
timeout 240 /tmp/hg_dev validate 2>&1 | tee "$OUT/validate.txt" | tail -25
for tool in memcheck racecheck synccheck; do
  timeout 120 compute-sanitizer --tool $tool /tmp/hg_dev small >"$OUT/sanitizer_$tool.txt" 2>&1
  echo "compute-sanitizer $tool rc=$? :: $(grep -E 'ERROR SUMMARY|validation:' "$OUT/sanitizer_$tool.txt" | tr '\n' ' ')"
done
[ "${1:-}" = "--time" ] && timeout 120 /tmp/hg_dev time 2>&1 | tee "$OUT/time.txt"
