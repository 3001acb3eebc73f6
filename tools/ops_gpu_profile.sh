#!/usr/bin/env bash
# GPU-machine profile of the hybrid kernels with Nsight Compute: why the prefill (wgmma) and decode (split-K) kernels
# miss their targets. Builds the dev harness, then profiles the last of three launches of one problem per case.
# Usage (repo root): bash tools/ops_gpu_profile.sh. Full reports under $OUT; key lines printed.
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench"
$NVCC dev/kernels/hybrid_gemm.cu src/ops/hybrid_gemm.cu -lcublas -o /tmp/hg_dev >/tmp/build.log 2>&1 || { tail -20 /tmp/build.log; exit 1; }
prof() {  # tag kernel-regex N K M f
  local tag=$1 re=$2; shift 2
  timeout 150 ncu --kernel-name "regex:$re" --launch-skip 2 --launch-count 1 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section WarpStateStats \
    /tmp/hg_dev one "$@" >"$OUT/ncu_$tag.txt" 2>&1
  echo "== $tag ($re, N K M f = $*) rc=$?"
  grep -E "Duration|Throughput|Busy|Bandwidth|Hit Rate|Achieved Occupancy|Issue Slots|Executed Ipc|Warp Cycles|stall|Stall" \
    "$OUT/ncu_$tag.txt" | sed 's/  */ /g' | head -30
}
prof prefill_f0 hybrid_prefill 12288 4096 8192 0.0
prof prefill_f1 hybrid_prefill 12288 4096 8192 1.0
prof decode_f09_m16 hybrid_decode 12288 4096 16 0.9
