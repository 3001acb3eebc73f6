#!/usr/bin/env bash
# GPU-machine check + prefill benchmark of the wgmma hybrid kernel (hybrid_prefill.cuh), one device-tool call:
# builds with plain nvcc, validates every kernel against the fp32 reference (NaN-poisoned outputs, bitwise reruns,
# M = 1 … 8192, ragged shapes, f ∈ {0, 0.5, 0.9, 1}; v8 in dev/kernels/prefill_sorted.cu against fp64, plain and
# under memcheck), runs compute-sanitizer on a small case, then (only if all that
# passed) times M ∈ {256, 512, 2048, 8192} beside cuBLAS and cuSPARSELt with weights rotated past L2.
# Usage (repo root): bash tools/ops_gpu_prefill.sh [--quick | --check-only] [bench_ops filters: --shapes, --ms,
# --fs]. SKIP_CHECKS=1: the timings only (no dev harness, sanitizers or validation); SORTED_ONLY=1: of the checks
# only v8's harness (plain and memcheck; hg_dev, its sanitizers and validation skipped); BUDGET: seconds for all (560);
# ROUNDS=R: bench_ops' head-to-head in R rotated rounds (cuBLAS, cuSPARSELt, the sharex kernel), summed up after the
# table. TIMELINE=1: before the bench, v8's per-unit timeline (dev/kernels/prefill_timeline.cu: span, idle share of
# the cluster-time, tail, light / heavy pairs' unit times; whole units and the cut tail) into $OUT/timeline.md.
# Logs and tables under $OUT.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
source "$(dirname "$0")/gpu_common.sh"
EXTRA=$(cusparselt_flags)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader | tee "$OUT/checks.txt"
T0=$SECONDS
$NVCC -Xptxas -v -c src/ops/hybrid_gemm.cu -o /tmp/hg.o >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -20; exit 1; }
SKIP=${SKIP_CHECKS:-0}
SORTED=${SORTED_ONLY:-0}
[ "$SKIP" = 1 ] || [ "$SORTED" = 1 ] \
  || $NVCC dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev >>"$OUT/build.log" 2>&1 &
[ "$SKIP" = 1 ] || $NVCC dev/kernels/prefill_sorted.cu /tmp/hg.o -lcublas -o /tmp/prefill_sorted >>"$OUT/build.log" 2>&1 &
$NVCC bench/bench_ops.cu /tmp/hg.o -lcublas $EXTRA -o /tmp/bench_ops >>"$OUT/build.log" 2>&1 &
[ "${TIMELINE:-0}" = 1 ] && $NVCC -DPATCHLLM_PREFILL_TIMELINE dev/kernels/prefill_timeline.cu src/ops/hybrid_gemm.cu \
  -lcublas -o /tmp/prefill_timeline >>"$OUT/build.log" 2>&1 &
wait
{ { { [ -x /tmp/hg_dev ] || [ "$SORTED" = 1 ]; } && [ -x /tmp/prefill_sorted ]; } || [ "$SKIP" = 1 ]; } \
  && [ -x /tmp/bench_ops ] \
  || { tail -20 "$OUT/build.log"; exit 1; }
grep -A2 -E "prefill_(sk_)?kernel" "$OUT/build.log" | grep -E "registers|spill" | sort | uniq -c
grep -c "wgmma.mma_async instructions are serialized" "$OUT/build.log" \
  | sed 's/^/wgmma serialised (C7514, C7515, C7520) messages: /'  # want 0 (ctest Kernels.PtxasKeepsWgmmaPipelined)
echo "build ${SECONDS}s"
# All check logs in one file ($OUT brings back at most 8 files).
[ "$SKIP" = 1 ] && echo "checks skipped (SKIP_CHECKS=1)" | tee -a "$OUT/checks.txt"
for tool in $([ "$SKIP" = 1 ] || [ "$SORTED" = 1 ] || echo memcheck racecheck synccheck); do
  timeout 60 compute-sanitizer --tool $tool /tmp/hg_dev small >/tmp/san.txt 2>&1
  echo "compute-sanitizer $tool rc=$? :: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|validation:' /tmp/san.txt | tr '\n' ' ')" \
    | tee -a "$OUT/checks.txt"
  grep -E "FAIL|launch failed|Invalid|Race|hazard" /tmp/san.txt | head -4 | tee -a "$OUT/checks.txt"
done
# v8 (its own harness: another order of the sums, so against fp64 rather than v4d bit for bit), plain and memcheck
rc=0
for tool in $([ "$SKIP" = 1 ] || echo none memcheck); do
  [ $tool = none ] && pre="" || pre="compute-sanitizer --tool $tool"
  timeout 120 $pre /tmp/prefill_sorted >/tmp/ps.txt 2>&1
  psrc=$?
  [ $psrc -eq 0 ] || rc=1
  echo "prefill_sorted ($tool) rc=$psrc :: $(grep -E 'prefill_sorted:|ERROR SUMMARY' /tmp/ps.txt | tr '\n' ' ')" \
    | tee -a "$OUT/checks.txt"
  grep -E "FAIL" /tmp/ps.txt | head -4 | tee -a "$OUT/checks.txt"
done
[ "$SKIP" = 1 ] || [ "$SORTED" = 1 ] || { timeout 300 /tmp/hg_dev validate >/tmp/validate.txt 2>&1 || rc=1; }
touch /tmp/validate.txt
cat /tmp/validate.txt >>"$OUT/checks.txt"
echo "validate rc=$rc ($((SECONDS - T0))s)"
grep -E "FAIL|validation:|launch failed" /tmp/validate.txt | head -12
[ $rc -eq 0 ] || exit 1
[ "${1:-}" = "--check-only" ] && exit 0
if [ "${TIMELINE:-0}" = 1 ]; then
  { [ -x /tmp/prefill_timeline ] && timeout 120 /tmp/prefill_timeline >"$OUT/timeline.md" 2>&1; } \
    || echo "prefill_timeline failed (rc=$?)" >>"$OUT/timeline.md"
  cat "$OUT/timeline.md"
fi
timeout $((${BUDGET:-560} - (SECONDS - T0))) /tmp/bench_ops --prefill "$@" --rounds "${ROUNDS:-0}" \
  --out "$OUT/bench_prefill" \
  >"$OUT/bench_summary.md" 2>"$OUT/bench.log"
echo "bench rc=$? ($((SECONDS - T0))s)"
grep -E "VALIDATION|cuSPARSELt" "$OUT/bench.log" | head -10
python3 - "$OUT/bench_prefill.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
get = lambda sh, M, k, f=None: next((r for r in rows if r["shape"] == sh and r["M"] == M and r["kernel"] == k
                                     and (f is None or abs(r["f"] - f) < 0.02)), None)
print("| shape | M | cuBLAS µs (TF) | cuSPARSELt × | f | hybrid µs | TFLOP/s | × cuBLAS | ideal | bn128 × | bn256 × "
      "| v7 × | v7 / cuSPARSELt | v7 4 stages × | v7rs × | v8 × | v8 / cuSPARSELt |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
sp = lambda r: r["speedup_vs_cublas"] if r else 0
for r in rows:
    if r["kernel"] != "hybrid": continue
    cu, cs = get(r["shape"], r["M"], "cublas"), get(r["shape"], r["M"], "cusparselt")
    b1, b2 = get(r["shape"], r["M"], "hybrid-bn128", r["f"]), get(r["shape"], r["M"], "hybrid-bn256", r["f"])
    v7, v7rs = get(r["shape"], r["M"], "hybrid-v7", r["f"]), get(r["shape"], r["M"], "hybrid-v7rs", r["f"])
    v74 = get(r["shape"], r["M"], "hybrid-v7-4st", r["f"])  # f = 1: v7 with the four dense-sized stages
    v8 = get(r["shape"], r["M"], "hybrid-v8", r["f"])
    print(f"| {r['shape']} | {r['M']} | {cu['us']:.1f} ({cu['tflops']:.0f}) | {sp(cs):.2f} | "
          f"{r['f']:.2f} | {r['us']:.1f} | {r['tflops']:.0f} | {r['speedup_vs_cublas']:.2f} | {r['ideal']:.2f} | "
          f"{sp(b1):.2f} | {sp(b2):.2f} | {sp(v7):.2f} | {sp(v7) / sp(cs) if cs and v7 else 0:.2f} | "
          f"{sp(v74) if v74 else float('nan'):.2f} | "
          f"{sp(v7rs):.2f} | {sp(v8):.2f} | {sp(v8) / sp(cs) if cs and v8 else 0:.2f} |")
# The head-to-head rounds (ROUNDS > 0): per block, the sharex kernel × cuBLAS and × cuSPARSELt, same rounds.
# v8 also against itself with the pairs (2g, 2g + 1) (rr-hybrid-v8p, before session 34), and v8w (whole units only)
# and v8c (the cut tail, session 37) against v8 (the library's default: one of the two).
VARIANTS = ("rr-hybrid-v8w", "rr-hybrid-v8c")
for r in rows:
    if not r["kernel"].startswith("rr-hybrid") or r["kernel"] == "rr-hybrid-v8p": continue
    cs = get(r["shape"], r["M"], "rr-cusparselt", r["f"])
    vp = get(r["shape"], r["M"], "rr-hybrid-v8p", r["f"]) if r["kernel"] not in VARIANTS else None
    v8 = get(r["shape"], r["M"], "rr-hybrid-v8", r["f"]) if r["kernel"] in VARIANTS else None
    print(f"rounds {r['shape']} M={r['M']} f={r['f']:.2f}: {r['kernel'][3:]} {sp(r):.3f}x cuBLAS"
          + (f", {sp(r) / sp(cs):.3f}x cuSPARSELt" if cs else "") + (f", {sp(r) / sp(vp):.3f}x v8p" if vp else "")
          + (f", {sp(r) / sp(v8):.3f}x v8" if v8 else ""))
PY
# Where the run has f = 0, 0.9 and 1 (e.g. --fs 0,0.9,1): the f = 0.9 mix bound from this run's own rates.
python3 tools/prefill_bound.py --mix "$OUT/bench_prefill.csv" 2>&1 | tail -20
