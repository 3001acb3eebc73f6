#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: check and time the split-K decode kernel (hybrid_decode.cuh). Builds
# with plain nvcc (no CMake/LibTorch); validates every kernel against the fp32 reference (hg_dev validate: outputs
# NaN-poisoned, reruns bitwise; grid -7 = PDL with x written by the kernel just before, -8 = the cluster reduction
# v3g, -9 = v3g bitwise against the workspace reduction on the same split, -4 = v3d, -13 / -14 = the row split
# over CTAs of 4 warps (v3i, bitwise against v3h) / 2 warps (v3h)); shows the PDL check catches a
# missing griddepcontrol.wait (a copy built without it must fail grid -7); memcheck, racecheck and synccheck on the
# small case; then bench_ops --decode (MS, default 1,16; EXTRA=1 adds the k-split sweep and v3d/v1) beside cuBLAS,
# weights rotated past L2 (CHECKS=0: the timing only; ROUNDS=R: R rounds with cuBLAS in them, rows rr-*). Logs
# and tables under $OUT: eight files, as many as the device tool brings back (build logs stay in /tmp; their tail is
# printed when a build fails).
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Ibench"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$SECONDS
rm -rf /tmp/nowait && mkdir -p /tmp/nowait && cp -r src /tmp/nowait/
sed -i 's/hg::pdl_grid_dependency_wait();/(void)0;/' /tmp/nowait/src/ops/hybrid_decode.cuh
$NVCC -Isrc -Xptxas -v -c src/ops/hybrid_gemm.cu -o /tmp/hg.o >/tmp/build_lib.log 2>&1 ||
  { tail -30 /tmp/build_lib.log; exit 1; }
$NVCC -Isrc dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev >/tmp/build_dev.log 2>&1 &
$NVCC -Isrc bench/bench_ops.cu /tmp/hg.o -lcublas -o /tmp/bench_ops >/tmp/build_bench.log 2>&1 &
( $NVCC -I/tmp/nowait/src -c /tmp/nowait/src/ops/hybrid_gemm.cu -o /tmp/hg_nowait.o &&
  $NVCC -I/tmp/nowait/src dev/kernels/hybrid_gemm.cu /tmp/hg_nowait.o -lcublas -o /tmp/hg_dev_nowait ) \
  >/tmp/build_nowait.log 2>&1 &
wait
[ -x /tmp/hg_dev ] && [ -x /tmp/bench_ops ] || { tail -20 /tmp/build_*.log; exit 1; }
# registers and spills per decode kernel instance (NT, KB, bf16, RUN4)
re='.*decode_kernelILi([0-9]+)ELi([0-9]+)ELb([01])ELb([01]).*stack frame, ([0-9]+) bytes spill stores.*Used ([0-9]+) '
grep -E "Compiling entry|registers|spill" /tmp/build_lib.log | grep -A2 "decode_kernel" | paste - - - |
  sed -E "s/${re}registers.*/NT=\1 KB=\2 bf16=\3 RUN4=\4: \6 registers, \5 B spilled/" | sort -u | tr '\n' ';'
echo " build ${SECONDS}s"
# the auto dispatch and the decode-kernel codes (the prefill codes are ops_gpu_prefill.sh's); CHECKS=0: timing only
if [ "${CHECKS:-1}" != 0 ]; then
timeout 200 /tmp/hg_dev validate ${GRIDS:-0,-2,-4,-7,-8,-9,-13,-14,-31} >"$OUT/validate.txt" 2>&1; echo "validate rc=$? ($((SECONDS - T0))s)"
grep -E "FAIL|validation:|launch failed" "$OUT/validate.txt" | head -8
timeout 60 /tmp/hg_dev_nowait small -7 >/tmp/validate_nowait.txt 2>&1
echo "negative control (no griddepcontrol.wait, grid -7) rc=$? :: $(grep -c FAIL /tmp/validate_nowait.txt) FAIL \
lines; $(grep validation: /tmp/validate_nowait.txt)"
# memcheck on every small case; racecheck and synccheck (slow) on auto dispatch and the decode paths PDL and cluster
for tool in memcheck racecheck synccheck; do
  only=""; [ $tool != memcheck ] && only="0,-7,-8,-9,-13,-14,-31"
  timeout 120 compute-sanitizer --tool $tool /tmp/hg_dev small $only >>"$OUT/sanitizer.txt" 2>&1
  echo "$tool rc=$? :: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|validation:' "$OUT/sanitizer.txt" | tail -2 |
    tr '\n' ' ')"
done
fi
extra=""; [ "${EXTRA:-0}" = 1 ] && extra="--extra"
timeout $((560 - (SECONDS - T0))) /tmp/bench_ops --decode $extra --ms "${MS:-1,16}" --rounds "${ROUNDS:-0}" \
  --out "$OUT/bench_decode" >"$OUT/bench_summary.md" 2>"$OUT/bench.log"
echo "bench rc=$? ($((SECONDS - T0))s)"
grep "^rounds" "$OUT/bench.log"  # ROUNDS=R: cuBLAS in the same rotation as the decode variants
grep -E "VALIDATION" "$OUT/bench.log" | head -5
grep "^sweep" "$OUT/bench.log" | sed "s/^sweep //"
python3 - "$OUT/bench_decode.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
us = {(r['shape'], r['M'], r['kernel'], round(float(r['f']), 1)): float(r['us']) for r in rows}
alts = ['hybrid-pdl', 'hybrid-pdl-ws', 'hybrid-pdl-w8', 'hybrid-pdl-cl', 'hybrid-pdl-w4', 'hybrid-pdl-w4v3h', 'hybrid-pdl-w2', 'hybrid-pdl-db']
print('| shape | M | f | cuBLAS µs | hybrid µs | x cuBLAS: pdl (auto) | pdl, workspace (old auto) | pdl, k-split | pdl + cluster | pdl + w4 (v3i) | pdl + w4 v3h | pdl + w2 | pdl, 2 batches everywhere | ideal |')
print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
for (sh, m, k, f), t in us.items():
    if k != 'hybrid': continue
    cb = us[(sh, m, 'cublas', 0.0)]
    x = ' | '.join(f'{cb / us[(sh, m, a, f)]:.2f}' if (sh, m, a, f) in us else '-' for a in alts)
    print(f'| {sh} | {m} | {f} | {cb:.1f} | {t:.1f} | {x} | {1 / (1 - 0.4375 * f):.2f} |')
PY
