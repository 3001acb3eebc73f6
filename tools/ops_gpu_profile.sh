#!/usr/bin/env bash
# GPU-machine profile of the hybrid kernels with Nsight Compute: why the prefill (wgmma) and decode (split-K) kernels
# miss their targets. Builds the dev harness, then profiles the last of three launches of one problem per case.
# Usage (repo root): bash tools/ops_gpu_profile.sh [CASE ...], CASE = tag:kernel-regex:N:K:M:f[:grid] (default: the
# prefill and decode cases below; grid = a dev harness grid code, e.g. -21 for the prefill v4i with 256 tokens).
# Full reports under $OUT (ncu_TAG.txt, with launch statistics and per-SASS-line stall sampling); key lines printed;
# the decode kernel's SASS instruction histogram in $OUT/sass_decode.txt.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
$NVCC dev/kernels/hybrid_gemm.cu src/ops/hybrid_gemm.cu -lcublas -o /tmp/hg_dev >/tmp/build.log 2>&1 || { tail -20 /tmp/build.log; exit 1; }
prof() {  # tag kernel-regex N K M f grid
  local tag=$1 re=$2; shift 2
  timeout 150 ncu --kernel-name "regex:$re" --launch-skip 2 --launch-count 1 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats \
    --section LaunchStats --section SchedulerStats --section SourceCounters \
    /tmp/hg_dev one "$@" >"$OUT/ncu_$tag.txt" 2>&1
  echo "== $tag ($re, N K M f = $*) rc=$?"
  grep -E "Duration|DRAM Throughput|Memory Throughput|L2 Cache Throughput|Compute \(SM\) Throughput|Busy|Hit Rate|Achieved Occupancy|Theoretical Occupancy|Registers Per|Shared Memory Configuration|Block Size|Grid Size|Issue Slots|Executed Ipc|Eligible Warps|Warp Cycles|No Eligible" \
    "$OUT/ncu_$tag.txt" | sed 's/  */ /g' | head -40
}
CASES=("$@")
# Default: v4d (auto picks 256-token tiles here) beside v4i (-21) at f = 0 and 1, and decode.
[ ${#CASES[@]} -gt 0 ] || CASES=(prefill_f0:hybrid_prefill:12288:4096:8192:0.0 prefill_f1:hybrid_prefill:12288:4096:8192:1.0
  v4i_f0:hybrid_prefill:12288:4096:8192:0.0:-21 v4i_f1:hybrid_prefill:12288:4096:8192:1.0:-21
  decode_f09_m16:hybrid_decode:12288:4096:16:0.9)
for c in "${CASES[@]}"; do IFS=: read -r tag re n k m f g <<<"$c"; prof "$tag" "$re" "$n" "$k" "$m" "$f" ${g:-0}; done
cuobjdump -sass /tmp/hg_dev 2>/dev/null | awk '/Function : .*hybrid_decode/{on=1} /Function : /&&!/hybrid_decode/{on=0} on' \
  | grep -oE "^ +/\*[0-9a-f]+\*/ +[A-Z][A-Z0-9_.]+" | awk '{print $2}' | sort | uniq -c | sort -rn > "$OUT/sass_decode.txt"
echo "== SASS of the decode kernels (all instantiations), top opcodes:"; head -12 "$OUT/sass_decode.txt"
