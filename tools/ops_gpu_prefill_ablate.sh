#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: the prefill kernel variants of hybrid_prefill.cuh and what limits
# them (docs/benchmarks/kernels.md, "Prefill: shared-memory reads and wgmma groups per slab"). Builds the dev harness;
# checks PV_LEAN (-15 / -16 = 128 / 256 tokens per CTA, direct launch), v4g = A registers from global memory
# (-17 / -18 tile kernel, -19 stream-K), v4i = one wgmma group per slab (-20 … -22) and both (-23 … -25) against the
# fp32 reference and bitwise against v4d, under compute-sanitizer on the small case; then `hg_dev ablate` times v4d,
# PV_LEAN, v4g, v4i, their combinations and the probes (on v4i + PV_LEAN: A loads, weight copies, x boxes stopped
# after the first slabs) beside cuBLAS on CASES (N:K:M:f, default below).
# Reading it: batched/base is v4i's gain (v4d waits for each slab it issues). Then, on v4i: lean up to ~1.1 at f = 1
# (81 -> 73 KB of shared-memory reads per slab) and "probe A once" above it -> the reads matter; "A+W once" above
# "A once" -> the weight's bytes matter too (L2 or smem writes), and batched+global_a should land between them;
# "X once" far above the rest -> x traffic. The winner becomes the launcher's default after
# `bash tools/ops_gpu_prefill.sh` passes with it.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
VARIANTS=-15,-16,-17,-18,-19,-20,-21,-22,-23,-24,-25
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$SECONDS
$NVCC -c src/ops/hybrid_gemm.cu -o /tmp/hg.o >"$OUT/build.log" 2>&1 &&
  $NVCC -Xptxas -v dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev >>"$OUT/build.log" 2>&1 ||
  { grep -E "error" "$OUT/build.log" | head -20; exit 1; }
grep -cE "C7514|C7520" "$OUT/build.log" | sed 's/^/wgmma serialised (C7514, C7520) messages: /'  # want 0
echo "build $((SECONDS - T0))s"
for tool in memcheck racecheck synccheck; do
  timeout 90 compute-sanitizer --tool $tool /tmp/hg_dev small $VARIANTS,-3,-6 >/tmp/san.txt 2>&1
  echo "compute-sanitizer $tool rc=$? :: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|validation:' /tmp/san.txt | tr '\n' ' ')" \
    | tee -a "$OUT/checks.txt"
  grep -E "FAIL|launch failed|Invalid|Race|hazard" /tmp/san.txt | head -4 | tee -a "$OUT/checks.txt"
done
timeout 240 /tmp/hg_dev validate $VARIANTS >/tmp/validate.txt 2>&1
rc=$?
cat /tmp/validate.txt >>"$OUT/checks.txt"
echo "validate -15..-25 rc=$rc ($((SECONDS - T0))s): $(grep -E 'validation:' /tmp/validate.txt)"
grep -E "FAIL|differ|launch failed" /tmp/validate.txt | head -8
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(12288:4096:8192:1 12288:4096:8192:0.9 12288:4096:8192:0 4096:4096:2048:1
  28672:4096:2048:1 4096:14336:2048:0.9)
for c in "${CASES[@]}"; do
  IFS=: read -r n k m f <<<"$c"
  timeout 120 /tmp/hg_dev ablate "$n" "$k" "$m" "$f" >>"$OUT/ablate.txt" 2>&1 || echo "ablate $c rc=$?"
done
echo "total $((SECONDS - T0))s"
cat "$OUT/ablate.txt"
