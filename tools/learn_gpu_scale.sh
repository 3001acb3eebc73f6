#!/usr/bin/env bash
# On the GPU machine (issues 3 and 4). Part A: build; export → transformers logits check; PATCH-Tile at 7B scale
# (LLaMA-2-7B-shaped random bf16, seq 4096, micro-batch 1, layer checkpointing): ours vs the reference design
# (--materialise-masks) in the same run. Part B (PART=B): PATCH-Joint on Qwen2.5-0.5B- and LLaMA-3.2-1B-shaped
# models, both designs; Wanda and SparseGPT 2:4 on the 7B model (wall time, peak GPU memory from nvidia-smi).
# PART=C: only Wanda and SparseGPT 2:4 on the 7B model (NS windows × 2048, SparseGPT with --no-weights), with the
# allocator peak and prune time from prune_report.json. PART=D: only PATCH-Tile at 7B, both designs. PART=E: only
# PATCH-Joint (Qwen2.5-0.5B and LLaMA-3.2-1B shapes), both designs. PART=F: the fused mask kernels: Joint on both
# shapes fused (default), unfused (--unfused-masks) and the reference design, Qwen also with --ce-chunk 256.
# PART=G: PATCH-Tile at 7B fused, unfused and reference. PART=H: Joint fused and reference on both shapes
# (REPS alternating Qwen pairs). PART=I: H once, then Qwen with the allocator's events profiled. PART=K: Tile 7B
# ours with --keep-layers N for N in KEEP. A profiled run (PROFILE) is slower after its profiled step: time runs unprofiled. TESTS="test_a ..." builds and runs those tests first.
# Needs .deps/gpu-data/{tokenizer.model,wiki.test.raw} (LLaMA-2 tokenizer and WikiText-2 test from ../shared).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source "$(dirname "$0")/gpu_common.sh"
export PYTHONUNBUFFERED=1
D=$PWD/.deps/gpu-data
P=$PWD/build-gpu/patchllm
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
t0=$(date +%s)
TESTS=${TESTS:-}
cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DPATCHLLM_BUILD_TESTS=$([ -n "$TESTS" ] && echo ON || echo OFF) \
  -DPATCHLLM_BUILD_BENCH=OFF -DPATCHLLM_PCRE2_INCLUDE=$PWD/.deps/include -DCMAKE_CUDA_ARCHITECTURES=90a \
  > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
ninja -C build-gpu patchllm $TESTS > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
run_tests "$TESTS"
# Peak GPU memory as nvidia-smi sees it (includes the CUDA context and the allocator's cache) while a command runs.
smi_peak() {
  local f=$(mktemp); ( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$f"; sleep 0.2; done ) &
  local pid=$!; local s=$(date +%s.%N); "$@" > "$OUT/last.log" 2>&1; local rc=$?; kill $pid 2>/dev/null; wait $pid 2>/dev/null
  echo "rc=$rc wall_s=$(python3 -c "print(round($(date +%s.%N)-$s,1))") smi_peak_gib=$(sort -n "$f" | tail -1 | python3 -c 'import sys;print(round(int(sys.stdin.read() or 0)/1024,1))')"
}
learn() {  # tag model method sparsity extra...   (PROFILE=tag1,tag2: Kineto profile of step 3 of those runs)
  local tag=$1 m=$2 meth=$3 s=$4; shift 4
  case ",${PROFILE:-}," in *",$tag,"*) export PATCHLLM_PROFILE=/tmp/trace_$tag.json ;; *) unset PATCHLLM_PROFILE ;; esac
  local r; r=$(smi_peak $P prune -m "$m" --method "$meth" --sparsity "$s" -f "$D/wiki.test.raw" --prior wanda --nsamples 8 \
      --seqlen 512 --train-seqlen 4096 --micro-batch 1 --steps ${STEPS:-6} --grad-checkpoint --weight-reg 0 \
      --device cuda -o /tmp/learn_$tag --force "$@")
  python3 - "$tag" "$r" /tmp/learn_$tag/train_log.jsonl <<'PY' | tee -a "$OUT/learn_scale.jsonl"
import json, sys, statistics
tag, r, log = sys.argv[1:4]
kv = dict(x.split("=") for x in r.split())
try:
    recs = [json.loads(l) for l in open(log)]
except OSError:
    recs = []
tail = recs[2:] or recs
print(json.dumps({"run": tag, **kv, "steps": len(recs),
                  "ms_per_step_median": statistics.median(x["ms_per_step"] for x in tail) if tail else None,
                  "alloc_peak_gib": max((x.get("cuda_peak_gib", 0) for x in recs), default=None)}))
PY
  [ -f /tmp/learn_$tag/train_log.jsonl ] || tail -5 "$OUT/last.log"
  grep -qE "terminate|Error|error:" "$OUT/last.log" && tail -3 "$OUT/last.log"
  rm -rf /tmp/learn_$tag  # the resumable state of a 1B Joint run is ~17 GB: the disk holds only a few
  if [ -f /tmp/trace_$tag.json ]; then
    python3 tools/profile_summary.py /tmp/trace_$tag.json $tag | tee -a "$OUT/profiles.txt"; rm -f /tmp/trace_$tag.json
  fi
}
prune7b() {  # method extra...
  local meth=$1; shift
  r=$(smi_peak $P prune -m /tmp/l2-7b --method $meth --pattern 2:4 -f "$D/wiki.test.raw" --nsamples ${NS:-128} --seqlen 2048 \
      --device cuda -o /tmp/prune7b_$meth --force "$@")
  python3 - "$meth" "$r" /tmp/prune7b_$meth/prune_report.json "${NS:-128}" <<'PY' | tee -a "$OUT/prune_scale.jsonl"
import json, sys
meth, r, rep, ns = sys.argv[1:5]
kv = dict(x.split("=") for x in r.split())
try:
    j = json.load(open(rep))
    extra = {k: j.get(k) for k in ("prune_seconds", "seconds", "cuda_peak_gib", "achieved_sparsity")}
except OSError:
    extra = {}
print(json.dumps({"run": "prune7b_" + meth, "nsamples": int(ns), "seqlen": 2048, **kv, **extra}))
PY
  grep -E "error" "$OUT/last.log" | head -3
}
if [ "${PART:-A}" = C ]; then
  ckpt llama2-7b /tmp/l2-7b bfloat16
  prune7b sparsegpt --no-weights
  prune7b wanda
elif [ "${PART:-A}" = E ]; then  # only PATCH-Joint on the Qwen2.5-0.5B and LLaMA-3.2-1B shapes, both designs
  ckpt qwen2.5-0.5b /tmp/q05 bfloat16
  learn joint_q05_ours /tmp/q05 patch-joint 0.45
  learn joint_q05_reference /tmp/q05 patch-joint 0.45 --materialise-masks
  ckpt llama3.2-1b /tmp/l32 bfloat16
  learn joint_l32_ours /tmp/l32 patch-joint 0.45
  learn joint_l32_reference /tmp/l32 patch-joint 0.45 --materialise-masks
elif [ "${PART:-A}" = F ]; then
  ckpt qwen2.5-0.5b /tmp/q05 bfloat16
  learn joint_q05_fused /tmp/q05 patch-joint 0.45
  learn joint_q05_fused_ce256 /tmp/q05 patch-joint 0.45 --ce-chunk 256
  learn joint_q05_unfused /tmp/q05 patch-joint 0.45 --unfused-masks
  learn joint_q05_reference /tmp/q05 patch-joint 0.45 --materialise-masks
  ckpt llama3.2-1b /tmp/l32 bfloat16
  learn joint_l32_fused /tmp/l32 patch-joint 0.45
  learn joint_l32_reference /tmp/l32 patch-joint 0.45 --materialise-masks
  learn joint_l32_unfused /tmp/l32 patch-joint 0.45 --unfused-masks
elif [ "${PART:-A}" = H ] || [ "${PART:-A}" = I ]; then  # Joint, fused (default) and the reference, both shapes
  ckpt qwen2.5-0.5b /tmp/q05 bfloat16
  for r in $(seq ${REPS:-1}); do  # alternating pairs: the Qwen step is bound by the host's op dispatch, which drifts
    learn joint_q05_fused /tmp/q05 patch-joint 0.45
    learn joint_q05_reference /tmp/q05 patch-joint 0.45 --materialise-masks
  done
  [ "$PART" = I ] && learn joint_q05_fused /tmp/q05 patch-joint 0.45
  ckpt llama3.2-1b /tmp/l32 bfloat16
  learn joint_l32_fused /tmp/l32 patch-joint 0.45
  learn joint_l32_reference /tmp/l32 patch-joint 0.45 --materialise-masks
  if [ "$PART" = I ]; then  # a Qwen run with the allocator's events in its profile (where the peak is)
    PATCHLLM_PROFILE_MEMORY=1 PROFILE=joint_q05_memory STEPS=4 learn joint_q05_memory /tmp/q05 patch-joint 0.45
  fi
elif [ "${PART:-A}" = K ]; then  # PATCH-Tile at 7B, ours, with the last N layers not recomputed (KEEP="8 0")
  ckpt llama2-7b /tmp/l2-7b bfloat16
  for n in ${KEEP:-8 0}; do learn tile7b_keep$n /tmp/l2-7b patch-tile 0.45 --keep-layers $n; done
elif [ "${PART:-A}" = G ]; then
  ckpt llama2-7b /tmp/l2-7b bfloat16
  learn tile7b_fused /tmp/l2-7b patch-tile 0.45
  learn tile7b_reference /tmp/l2-7b patch-tile 0.45 --materialise-masks
  [ -n "${NO_UNFUSED:-}" ] || learn tile7b_unfused /tmp/l2-7b patch-tile 0.45 --unfused-masks
  if [ -n "${WITH_JOINT_1B:-}" ]; then
    ckpt llama3.2-1b /tmp/l32 bfloat16
    learn joint_l32_fused /tmp/l32 patch-joint 0.45
  fi
elif [ "${PART:-A}" = D ]; then
  ckpt llama2-7b /tmp/l2-7b bfloat16
  learn tile7b_ours /tmp/l2-7b patch-tile 0.45
  learn tile7b_reference /tmp/l2-7b patch-tile 0.45 --materialise-masks
elif [ "${PART:-A}" = A ]; then
  ckpt llama2-7b /tmp/l2-2L float32 2
  $P -q prune -m /tmp/l2-2L --method wanda --pattern 2:4 -f "$D/wiki.test.raw" --nsamples 16 --seqlen 512 --device cuda \
    --dtype fp32 -o /tmp/p2 --force > /dev/null && $P -q export -m /tmp/l2-2L --masks /tmp/p2/masks.safetensors -o /tmp/e2 --force \
    && python3 tools/export_check_hf.py build-gpu /tmp/l2-2L /tmp/p2/masks.safetensors /tmp/e2 "$OUT/export_check.json"
  ckpt llama2-7b /tmp/l2-7b bfloat16
  learn tile7b_ours /tmp/l2-7b patch-tile 0.45
  learn tile7b_reference /tmp/l2-7b patch-tile 0.45 --materialise-masks
else
  ckpt qwen2.5-0.5b /tmp/q05 bfloat16
  ckpt llama3.2-1b /tmp/l32 bfloat16
  learn joint_q05_ours /tmp/q05 patch-joint 0.45
  learn joint_q05_reference /tmp/q05 patch-joint 0.45 --materialise-masks
  learn joint_l32_ours /tmp/l32 patch-joint 0.45
  learn joint_l32_reference /tmp/l32 patch-joint 0.45 --materialise-masks
  ckpt llama2-7b /tmp/l2-7b bfloat16
  for meth in wanda sparsegpt; do
    r=$(smi_peak $P prune -m /tmp/l2-7b --method $meth --pattern 2:4 -f "$D/wiki.test.raw" --nsamples ${NS:-128} --seqlen 2048 \
        --device cuda -o /tmp/prune7b_$meth --force)
    echo "{\"run\": \"prune7b_$meth\", \"nsamples\": ${NS:-128}, \"seqlen\": 2048, \"result\": \"$r\"}" | tee -a "$OUT/prune_scale.jsonl"
    grep -E "error" "$OUT/last.log" | head -3
  done
  # Tile at 7B again (both designs, same run) if the time limit allows.
  if [ $(( $(date +%s) - t0 )) -lt ${TILE_IF_BEFORE:-300} ]; then
    learn tile7b_ours /tmp/l2-7b patch-tile 0.45
    learn tile7b_reference /tmp/l2-7b patch-tile 0.45 --materialise-masks
  fi
fi
echo "total: $(( $(date +%s) - t0 )) s"
cat "$OUT"/*.jsonl "$OUT"/export_check.json 2>/dev/null
