#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: what limits the wgmma prefill kernels (hybrid_prefill.cuh).
# Hypothesis under test (docs/benchmarks/kernels.md, "Prefill: shared-memory bytes per slab"): 2:4 slabs are bound by
# shared-memory reads (wgmma's B operand + the A fragments' ld.shared), not by L2 -> SM bytes. Builds the dev harness;
# checks PV_LEAN (only the A registers a slab uses; grids -15 / -16 = 128 / 256 tokens per CTA) and v4g (A registers
# from global memory, the weight never in shared memory; -17 / -18 tile kernel, -19 stream-K) against the fp32
# reference and bitwise against v4d, under compute-sanitizer on the small case; then `hg_dev ablate` times v4d
# (base), PV_LEAN, the probes (A lds, weight copies, x boxes stopped after the first slabs) and v4g beside cuBLAS on
# CASES (N:K:M:f, default below).
# Reading it: lean/base at f = 1 up to ~1.1 (81 -> 73 KB of reads per slab) and probe_a_once above lean -> the reads
# matter; probe_w_once above probe_a_once -> the weight's bytes matter (L2 or smem writes), and global_a should land
# between probe_a_once and probe_w_once; probe_x_once far above the rest -> x traffic. If global_a wins, it becomes
# the default (HybridGemmArgs::prefill_global_a's logic in the launcher), after `bash tools/ops_gpu_prefill.sh` passes
# with it.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$SECONDS
$NVCC -c src/ops/hybrid_gemm.cu -o /tmp/hg.o >"$OUT/build.log" 2>&1 &&
  $NVCC -Xptxas -v dev/kernels/hybrid_gemm.cu /tmp/hg.o -lcublas -o /tmp/hg_dev >>"$OUT/build.log" 2>&1 ||
  { grep -E "error" "$OUT/build.log" | head -20; exit 1; }
grep -c "C7520" "$OUT/build.log" | sed 's/^/wgmma serialised (C7520) warnings: /'  # want 0
echo "build $((SECONDS - T0))s"
for tool in memcheck racecheck synccheck; do
  timeout 90 compute-sanitizer --tool $tool /tmp/hg_dev small -15,-16,-17,-18,-19,-3,-6 >/tmp/san.txt 2>&1
  echo "compute-sanitizer $tool rc=$? :: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|validation:' /tmp/san.txt | tr '\n' ' ')" \
    | tee -a "$OUT/checks.txt"
  grep -E "FAIL|launch failed|Invalid|Race|hazard" /tmp/san.txt | head -4 | tee -a "$OUT/checks.txt"
done
timeout 240 /tmp/hg_dev validate -15,-16,-17,-18,-19 >/tmp/validate.txt 2>&1
rc=$?
cat /tmp/validate.txt >>"$OUT/checks.txt"
echo "validate -15..-19 rc=$rc ($((SECONDS - T0))s): $(grep -E 'validation:' /tmp/validate.txt)"
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
