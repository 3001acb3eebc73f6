#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: batched generation through the CUDA-graph decode step (DecodeGraph with
# left padding) and its attention spans. Builds patchllm, bench_model and the tests in TESTS (default test_decode_graph
# test_model) and runs the tests; makes a random LLaMA-2-7B bf16 checkpoint with the LLaMA-2 tokenizer
# (.deps/gpu-data, carried); then
#   1. `patchllm generate --prompts` (NPROMPTS prompts of 4 to 300 words, -b BATCH, -n NEW, --stop STOP so that the
#      random model's rows end at different steps) with the CUDA graph and continuous batching (default rounds of
#      4 x BATCH), with the CUDA graph and --round BATCH (no refills: every round one batch), and with --no-cuda-graph:
#      decode tok/s of each and how many completions agree (greedy; bf16 rounding may split near-ties of a random
#      model, so agreement is reported, not asserted);
#   2. bench_model graph decode at batch SPAN_B from a 16-token context for SPAN_DECODE steps, attending over the whole
#      capacity (--span-min 0) against the spans of generate's default (--span-min 256).
#   (MODES, default "graph norefill eager", picks the generate runs; "cudnn" is graph with PATCHLLM_SDPA_CUDNN=1,
#   PyTorch's cuDNN attention left in SDPA's choice during generation (as before session 23); "profile" is graph
#   with the refills PROFILE_REFILLS (default 1,2,40) under the Kineto profiler, summarised by
#   tools/profile_summary.py into profile.txt; a digit after a mode repeats it (graph2); SPAN=0 skips step 2;
#   tools/sdpa_first_call.py runs first when SDPA=1. Every generate run logs each refill (-v: its length, bucket,
#   whether the bucket is new in the process, ms), summarised as new-bucket against repeated-bucket refill times.)
# Env: OUT, TESTS, NPROMPTS (64), BATCH (16), NEW (256), STOP (at), SPAN_B (16), SPAN_DECODE (2048), MODEL (llama2-7b),
#      MODES, SPAN (1), SDPA (0), PROFILE_REFILLS.
set -u -o pipefail
OUT=${OUT:-/tmp/gen_out}
mkdir -p "$OUT"
source "$(dirname "$0")/gpu_common.sh"
t0=$(date +%s)
TESTS=${TESTS-test_decode_graph test_model}
MODEL=${MODEL:-llama2-7b}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
[ "${SDPA:-0}" = 1 ] && python3 tools/sdpa_first_call.py
cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
  -DPATCHLLM_BUILD_TESTS=$([ -n "$TESTS" ] && echo ON || echo OFF) -DPATCHLLM_BUILD_BENCH=ON \
  -DPATCHLLM_PCRE2_INCLUDE=$PWD/.deps/include -DCMAKE_CUDA_ARCHITECTURES=90a > /tmp/cmake.log 2>&1 \
  || { tail -30 /tmp/cmake.log; exit 1; }
ninja -C build-gpu patchllm bench_model $TESTS > /tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
run_tests "$TESTS"
ckpt "$MODEL" "/tmp/$MODEL" bfloat16
[ -f "/tmp/$MODEL/tokenizer.model" ] || { echo "no tokenizer (carry .deps)"; exit 1; }
echo "checkpoint: $(( $(date +%s) - t0 )) s"

python3 - "${NPROMPTS:-64}" > /tmp/prompts.jsonl <<'PY'
import json, random, sys
r = random.Random(0)
words = ("the a little dog cat ran over hill under bright sky said mother river quiet garden stone found light "
         "because after when then happy old green small tree house road window bird song").split()
for i in range(int(sys.argv[1])):
    print(json.dumps({"prompt": " ".join(r.choice(words) for _ in range(r.randint(4, 300)))}))
PY
P=build-gpu/patchllm
MODES=${MODES:-graph norefill eager}
for mode in $MODES; do
  env=""
  case ${mode%%[0-9]*} in  # graph2, cudnn2, ...: the same run again (files named by the mode)
    graph) flag=--cuda-graph ;; norefill) flag="--cuda-graph --round ${BATCH:-16}" ;; eager) flag=--no-cuda-graph ;;
    cudnn) flag=--cuda-graph; env="PATCHLLM_SDPA_CUDNN=1" ;;
    profile) flag=--cuda-graph; env="PATCHLLM_PROFILE=/tmp/refill.json PATCHLLM_PROFILE_REFILLS=${PROFILE_REFILLS:-1,2,40}" ;;
  esac
  env $env $P -v generate -m /tmp/$MODEL --device cuda --prompts /tmp/prompts.jsonl -o "$OUT/gen_$mode.json" -b ${BATCH:-16} \
    -n ${NEW:-256} --temp 0 --stop "${STOP:-at}" $flag 2> "$OUT/gen_$mode.err" || { tail -3 "$OUT/gen_$mode.err"; exit 1; }
done
echo "generate: $(( $(date +%s) - t0 )) s"
for f in /tmp/refill.json.*; do
  [ -f "$f" ] && python3 tools/profile_summary.py "$f" "refill ${f##*.}" >> "$OUT/profile.txt"
done
for s in $([ "${SPAN:-1}" = 1 ] && echo 0 256); do
  build-gpu/bench/bench_model -m /tmp/$MODEL --device cuda --prefill 128 --batches ${SPAN_B:-16} --context 16 \
    --decode ${SPAN_DECODE:-2048} -r 1 --no-fuse --graph-only --span-min $s > "$OUT/span_$s.log" 2> "$OUT/span_$s.err" \
    || { tail -3 "$OUT/span_$s.err"; exit 1; }
done
echo "total: $(( $(date +%s) - t0 )) s"
python3 - "$OUT" <<'PY'
import json, sys
o = sys.argv[1]
import os
names = {"graph": "graph, continuous", "norefill": "graph, no refill", "eager": "eager, continuous",
         "cudnn": "graph, continuous, cuDNN SDPA", "profile": "graph, continuous, refills profiled"}
import glob, re
runs = {}
for f in sorted(glob.glob(f"{o}/gen_*.json")):
    m = f[len(o) + 5:-5]
    if m.rstrip("0123456789") in names:
        runs[m] = json.load(open(f))
label = lambda m: names[m.rstrip("0123456789")] + (f" ({m[len(m.rstrip('0123456789')):]})" if m[-1].isdigit() else "")
for m, j in runs.items():
    s = j["speed"]
    print(f"  {label(m):34s} {len(j['results'])} prompts, batch {j['batch']}: {s['generated_tokens']} tokens, decode "
          f"{s['generated_tokens'] / s['decode_seconds']:.0f} tok/s, prompt {s['prompt_tokens'] / s['prompt_seconds']:.0f} "
          f"tok/s, wall {s['decode_seconds'] + s['prompt_seconds']:.2f} s")
import statistics
for m in runs:  # each refill's time (-v log): the first of its bucket length in the process against the repeats
    new, rep = [], []
    for line in open(f"{o}/gen_{m}.err"):
        r = re.search(r"refill \d+: (\d+) tokens at length (\d+)( \(new\))?, ([\d.e+-]+) ms", line)
        if r:
            (new if r.group(3) else rep).append(float(r.group(4)))
    if new or rep:
        med = lambda v: f"{statistics.median(v):.1f}" if v else "-"
        print(f"  {label(m):34s} refills: {len(new)} new buckets, median {med(new)} ms (sum {sum(new):.0f}); "
              f"{len(rep)} repeats, median {med(rep)} ms (sum {sum(rep):.0f})")
if "graph" in runs and "eager" in runs:
    same = sum(a["completion"] == b["completion"] for a, b in zip(runs["graph"]["results"], runs["eager"]["results"]))
    print(f"  identical completions, graph and eager: {same} of {len(runs['graph']['results'])}")
for s in (0, 256):
    if not os.path.exists(f"{o}/span_{s}.log"):
        continue
    for line in open(f"{o}/span_{s}.log"):
        if line.startswith("{") and '"decode"' in line:
            d = json.loads(line)
            print(f"graph decode b{d['batch']} from context {d['context']}, {d['tokens']} steps, span-min {s}: "
                  f"{d['tok_per_s']:.0f} tok/s ({d['decode_step']})")
PY
[ -f "$OUT/profile.txt" ] && cat "$OUT/profile.txt"; true
