#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: prefill v6/v6b/v7 (the weight as wgmma A from shared memory, SS form;
# v7 persistent and with x shared in 2-CTA clusters; dev/kernels/prefill_ss.cu) against v4d (RS form) and cuBLAS on
# CASES (N:K:M:f), each checked bit for bit against v4d and v4d against cuBLAS; then compute-sanitizer on a small case
# (one launch per kernel), and with HG_RACECHECK=1 racecheck grid by grid on the pipelined kernels of the dev harness
# (grids -3 auto, -128 / -256 tile kernel, -6 stream-K, 7 mma.sync persistent; kernels.md, "Session 16").
# DEFINES: extra nvcc flags; SKIP_CHECKS=1: timing only. Writes at most 8 files under $OUT (the device tool brings
# back eight).
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc ${DEFINES:-} -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$SECONDS
$NVCC -Xptxas -v dev/kernels/prefill_ss.cu -lcublas -o /tmp/prefill_ss >/tmp/build_ss.log 2>&1 &
B1=$!
B2=
if [ "${HG_RACECHECK:-0}" = 1 ]; then
  { $NVCC -c src/ops/hybrid_gemm.cu -o /tmp/hg.o &&
    $NVCC dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev; } >/tmp/build_hg.log 2>&1 &
  B2=$!
fi
wait $B1 || { grep -E "error" /tmp/build_ss.log | head -20; exit 1; }
grep -E "spill|C7514|C7520" /tmp/build_ss.log | sort | uniq -c | tee "$OUT/build.txt"
echo "build prefill_ss $((SECONDS - T0))s"
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(12288:4096:8192:1 12288:4096:8192:0.9 12288:4096:8192:0 4096:4096:2048:1
  28672:4096:2048:1 28672:4096:2048:0.9 4096:14336:2048:0.9 4096:14336:2048:0 22016:4096:2048:0.9)
for c in "${CASES[@]}"; do
  IFS=: read -r n k m f <<<"$c"
  timeout 120 /tmp/prefill_ss "$n" "$k" "$m" "$f" >>"$OUT/ss.txt" 2>&1 || echo "prefill_ss $c rc=$?" | tee -a "$OUT/ss.txt"
done
echo "timing done $((SECONDS - T0))s; failures: $(grep -c FAIL "$OUT/ss.txt")"
[ "${SKIP_CHECKS:-0}" = 1 ] && { echo "total $((SECONDS - T0))s"; grep -E "^N=|^  " "$OUT/ss.txt"; exit 0; }
for tool in memcheck racecheck synccheck; do
  PREFILL_SS_CHECK_ONLY=1 timeout 90 compute-sanitizer --tool $tool /tmp/prefill_ss 512 512 300 0.5 >/tmp/san.txt 2>&1
  echo "prefill_ss $tool rc=$? :: $(grep -E 'SUMMARY|FAIL' /tmp/san.txt | tr '\n' ' ')" \
    "$(grep -oE '[a-z_]+[.]cuh?:[0-9]+' /tmp/san.txt | sort | uniq -c | sort -rn | head -8 | tr -s ' ' | tr '\n' ';')" |
    tee -a "$OUT/checks.txt"
  [ $tool = racecheck ] && grep -m 12 -E "Race|Write|Read|at 0x|in " /tmp/san.txt >>"$OUT/checks.txt"
done
[ "${HG_RACECHECK:-0}" = 1 ] || { echo "total $((SECONDS - T0))s"; grep -E "^N=|^  " "$OUT/ss.txt"; exit 0; }
wait $B2 || { grep -E "error" /tmp/build_hg.log | head -20; exit 1; }
for g in 7 -3 -128 -256 -6; do  # small mode: -128, -256 and the persistent kernel (7) at M > 16 (session 17)
  timeout 60 compute-sanitizer --tool racecheck /tmp/hg_dev small $g >/tmp/san.txt 2>&1
  echo "racecheck grid $g rc=$? :: $(grep -E 'RACECHECK SUMMARY' /tmp/san.txt) $(grep -E 'validation:' /tmp/san.txt)" \
    "$(grep -oE 'in [a-z_]+[.]cuh:[0-9]+' /tmp/san.txt | sort | uniq -c | tr -s ' ' | tr '\n' ';')" |
    tee -a "$OUT/checks.txt"
done
echo "total $((SECONDS - T0))s"
grep -E "^N=|^  " "$OUT/ss.txt"
