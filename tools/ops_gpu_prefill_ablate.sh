#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: the prefill kernel variants of hybrid_prefill.cuh and what limits
# them (docs/benchmarks/kernels.md, "Prefill ablation"). Builds the dev harness; `hg_dev ablate` checks the exact
# variants bitwise against v4d, then times v4d, PV_LEAN, v4i (one wgmma group per slab), both, and the probes (on
# v4i + PV_LEAN: A loads, weight copies, both, x boxes, all three stopped after the first slabs) beside cuBLAS on
# CASES (N:K:M:f, default below). Then compute-sanitizer on the small case and the fp32-reference sweep of grids
# -15 / -16 (PV_LEAN, 128 / 256 tokens), -20 … -22 (v4i: tile 128, tile 256, stream-K) and -23 / -24 (PV_W_FIRST),
# each also bitwise vs v4d.
# Reading it: "W once" vs "A once" says which half of the weight's traffic (its copies into shared memory, or the
# A fragments' ld.shared) costs the time "A+W once" wins back; "X once" the same for x.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
VARIANTS=-15,-16,-20,-21,-22,-23,-24
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$SECONDS
$NVCC -c src/ops/hybrid_gemm.cu -o /tmp/hg.o >"$OUT/build.log" 2>&1 &&
  $NVCC -Xptxas -v dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev >>"$OUT/build.log" 2>&1 ||
  { grep -E "error" "$OUT/build.log" | head -20; exit 1; }
grep -cE "C7514|C7520" "$OUT/build.log" | sed 's/^/wgmma serialised (C7514, C7520) messages: /'  # want 0
echo "build $((SECONDS - T0))s"
# Timing first: ablate checks every exact variant bitwise against v4d (itself validated by tools/ops_gpu_prefill.sh)
# before it times anything, and the device tool's 10 minutes may not hold the sanitizers and the sweep as well.
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(12288:4096:8192:1 12288:4096:8192:0.9 12288:4096:8192:0 4096:4096:2048:1
  28672:4096:2048:1 4096:14336:2048:0.9)
for c in "${CASES[@]}"; do
  IFS=: read -r n k m f <<<"$c"
  timeout 120 /tmp/hg_dev ablate "$n" "$k" "$m" "$f" >>"$OUT/ablate.txt" 2>&1 || echo "ablate $c rc=$?"
done
echo "ablate done $((SECONDS - T0))s; bitwise failures: $(grep -c FAIL "$OUT/ablate.txt")"
# memcheck and synccheck over all grids at once; racecheck per grid, one summary line each, so that a report names its
# kernel. One by one (session 17, kernels.md): -3, -6, -128 clean; -256 reports write-after-read hazards (bulk copy
# after ld.shared of the stage it refills; the only grid whose small case refills a stage); outputs right.
for check in "memcheck $VARIANTS,-3,-6" "synccheck $VARIANTS,-3,-6"; do
  read -r tool grids <<<"$check"
  timeout 90 compute-sanitizer --tool $tool /tmp/hg_dev small $grids >/tmp/san.txt 2>&1
  rc=$?
  echo "compute-sanitizer $tool ($grids) rc=$rc :: $(grep -E 'SUMMARY|validation:' /tmp/san.txt | tr '\n' ' ')" |
    tee -a "$OUT/checks.txt"
  grep -E "FAIL|launch failed|Invalid" /tmp/san.txt | head -4 | tee -a "$OUT/checks.txt"
done
for g in -3 -6 ${VARIANTS//,/ }; do
  timeout 60 compute-sanitizer --tool racecheck /tmp/hg_dev small $g >/tmp/san.txt 2>&1
  echo "racecheck grid $g rc=$? :: $(grep -E 'RACECHECK SUMMARY' /tmp/san.txt) $(grep -oE 'in [a-z_]+[.]cuh:[0-9]+' \
    /tmp/san.txt | sort | uniq -c | tr -s ' ' | tr '\n' ';')" | tee -a "$OUT/checks.txt"
done
left=$((${BUDGET:-570} - (SECONDS - T0)))  # BUDGET: seconds this script may take
if [ $left -gt 30 ]; then timeout $left /tmp/hg_dev validate $VARIANTS >/tmp/validate.txt 2>&1; rc=$?
else echo "validation: skipped, no time left" >/tmp/validate.txt; rc=124; fi
cat /tmp/validate.txt >>"$OUT/checks.txt"
echo "validate $VARIANTS rc=$rc ($((SECONDS - T0))s): $(grep -E 'validation:' /tmp/validate.txt)"
grep -E "FAIL|differ|launch failed" /tmp/validate.txt | head -8
echo "total $((SECONDS - T0))s"
grep -vE "^\s*$" "$OUT/ablate.txt" | tail -140
