#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: Nsight Compute on one launch each of cuBLAS, cuSPARSELt (the algorithm
# its search picked) and the hybrid prefill kernels (auto dispatch, v7 and v8 on the prefill image), same problem and
# process (bench_ops' NVTX marks). E.g. `4096x4096:2048:0,0.9,1`: v8 at f = 0 (its dense rate) and 0.9 beside cuBLAS.
# The question: what does the baseline that meets the f = 1 target do differently? Kernel name (tile, cluster,
# stages), grid, registers, shared memory, tensor-pipe activity, shared-memory and L2 traffic.
# Usage: bash tools/ops_gpu_prefill_ncu.sh [CASE ...], CASE = shape-word:M:f-list (bench_ops --shapes / --ms / --fs),
# default qkv:8192:0.9,1 down:2048:1; the argument none runs none. V6="N:K:M:f ..." also profiles the dev kernel v6 (the
# weight as wgmma A by descriptor, packed-format-v2 layout: dev/kernels/prefill_ss.cu) on those problems. Reports in
# /tmp/ncu_reps, their raw pages as CSV ($OUT/raw_TAG.csv) and a summary table ($OUT/ncu_summary.md).
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu_ncu.txt"
REPS=/tmp/ncu_reps
mkdir -p "$REPS"
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(qkv:8192:0.9,1 down:2048:1)
[ "${CASES[0]}" = none ] && CASES=()
if [ ${#CASES[@]} -gt 0 ]; then
  EXTRA=$(cusparselt_flags)
  [ -n "$EXTRA" ] || { echo "cuSPARSELt not found: nothing to compare against"; exit 1; }
  nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -lineinfo -Isrc -Ibench \
    bench/bench_ops.cu src/ops/hybrid_gemm.cu -lcublas $EXTRA -o /tmp/bench_ops_ncu >"$OUT/build_ncu.log" 2>&1 \
    || { tail -20 "$OUT/build_ncu.log"; exit 1; }
fi
for c in ${V6:-}; do
  [ -x /tmp/prefill_ss ] || nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
    -lineinfo -Isrc -Ibench dev/kernels/prefill_ss.cu -lcublas -o /tmp/prefill_ss >"$OUT/build_ss.log" 2>&1 \
    || { tail -20 "$OUT/build_ss.log"; exit 1; }
  IFS=: read -r n k m f <<<"$c"
  tag="v6_${n}x${k}_${m}_f$f"
  timeout 300 ncu --kernel-name-base mangled -k "regex:prefill_ss_kernelILi1E" -s 2 -c 1 --set full -f \
    -o "$REPS/ncu_$tag" /tmp/prefill_ss "$n" "$k" "$m" "$f" >"/tmp/ncu_$tag.log" 2>&1
  echo "== v6 $c: ncu rc=$?; $(grep -cE 'FAIL' "/tmp/ncu_$tag.log") failures"
  grep -E "==(WARNING|ERROR)==" "/tmp/ncu_$tag.log" | head -3
  ncu -i "$REPS/ncu_$tag.ncu-rep" --page raw --csv --print-units base >"$OUT/raw_$tag.csv" 2>/dev/null
done
for c in "${CASES[@]}"; do
  IFS=: read -r word m fs <<<"$c"
  tag="${word}_${m}"
  PATCHLLM_PROFILE_MARKS=1 timeout 300 ncu --nvtx --nvtx-include "cublas/" --nvtx-include "cusparselt/" \
    --nvtx-include "hybrid/" --nvtx-include "hybrid-v7/" --nvtx-include "hybrid-v8/" --set full -f \
    -o "$REPS/ncu_$tag" /tmp/bench_ops_ncu \
    --prefill --shapes "$word" --ms "$m" --fs "$fs" --out /tmp/bench_ncu >"/tmp/ncu_$tag.log" 2>&1
  echo "== $c: ncu rc=$? ($(grep -c '==PROF==' "/tmp/ncu_$tag.log") profiler lines)"
  ncu -i "$REPS/ncu_$tag.ncu-rep" --page raw --csv --print-units base >"$OUT/raw_$tag.csv" 2>/dev/null
  grep -E "^row |VALIDATION" "/tmp/ncu_$tag.log" | head -6
done
python3 - "$OUT"/raw_*.csv <<'PY' | tee "$OUT/ncu_summary.md"
import csv, sys
# Per kernel: what it is, and the traffic that bounds a 2:4 GEMM (session 14's model: shared-memory bytes per MMA).
want = [("time us", "gpu__time_duration.sum", 1e-3), ("grid", "launch__grid_size", 1),
        ("block", "launch__block_size", 1),
        ("cluster", "launch__cluster_size", 1), ("regs", "launch__registers_per_thread", 1),
        ("smem KB", "launch__shared_mem_per_block_dynamic", 1 / 1024),
        ("tensor %", "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed", 1),
        ("smem wavefronts M", "l1tex__data_pipe_lsu_wavefronts_mem_shared.sum", 1e-6),
        ("of which ld.shared M", "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum", 1e-6),
        ("smem pipe %", "l1tex__data_pipe_lsu_wavefronts_mem_shared.sum.pct_of_peak_sustained_elapsed", 1),
        ("gmma inst M", "smsp__sass_inst_executed_op_shared_gmma.sum", 1e-6),
        ("L2 %", "lts__throughput.avg.pct_of_peak_sustained_elapsed", 1), ("L2 sectors M", "lts__t_sectors.sum", 1e-6),
        ("DRAM rd MB", "dram__bytes_read.sum", 1e-6),
        ("stall wg-arrive", "smsp__pcsamp_warps_issue_stalled_warpgroup_arrive", 1),
        ("stall short-sb", "smsp__pcsamp_warps_issue_stalled_short_scoreboard", 1)]
for path in sys.argv[1:]:
    rows = list(csv.reader(open(path)))
    if len(rows) < 3: continue
    head = rows[0]  # rows[1]: units (base: ns, bytes)
    col = {h: i for i, h in enumerate(head)}
    def val(r, name, scale):
        i = col.get(name)
        if i is None or not r[i].strip(): return "–"
        try:
            v = float(r[i].replace(",", ""))
        except ValueError:
            return r[i]
        return f"{v * scale:.4g}"  # base units: ns, bytes
    print(f"\n### {path.split('/')[-1]}\n")
    print("| kernel | " + " | ".join(w[0] for w in want) + " |")
    print("|---" * (len(want) + 1) + "|")
    for r in rows[2:]:
        name = r[col["Kernel Name"]] if "Kernel Name" in col else "?"
        print(f"| {name[:70]} | " + " | ".join(val(r, n, s) for _, n, s in want) + " |")
    missing = [n for _, n, _ in want if n not in col]
    if missing: print("\nnot in this report:", ", ".join(missing))
    for r in rows[2:]:  # the full names carry cuSPARSELt's and cuBLAS' tile shapes
        print("-", r[col["Kernel Name"]] if "Kernel Name" in col else "?")
PY
