#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang + ASan/UBSan) and runs each for SECONDS on a seed corpus of real files:
# tests/data, and stories260K converted, pruned and exported by the normal build (needs ../shared for those).
# usage: tools/fuzz.sh [TARGET ...]   (run from the repository root; default: every target)
# env: SECONDS_PER_TARGET (60), BUILD (build-fuzz), RELEASE_BUILD (build, for the seeds), OUT (fuzz-out), JOBS (nproc),
#      RUNS (when set: exactly RUNS inputs per target from a fixed seed instead of a time limit; 0 = replay the seeds
#      and the saved corpus only)
# Findings land in $OUT/<target>/ as crash-*/leak-*/oom-*/timeout-* files; the output ends with a table, one row a
# target, and the exit status is 1 when there is any finding.
# Reproduce one: $BUILD/fuzz/<target> $OUT/<target>/crash-... (with the env lines the table prints).
set -euo pipefail
BUILD=${BUILD:-build-fuzz}
RELEASE=${RELEASE_BUILD:-build}
OUT=${OUT:-fuzz-out}
SECS=${SECONDS_PER_TARGET:-60}
SH=${PATCHLLM_SHARED_DIR:-../shared}
JOBS=${JOBS:-$(nproc)}
ALL="fuzz_gguf fuzz_tokenizer_json fuzz_tokenizer_spm fuzz_tokenizer_llama2c fuzz_tokenizer_encode fuzz_tokenizer_config
     fuzz_chat_template
     fuzz_safetensors fuzz_model_config fuzz_model_weights fuzz_model_weights_packed fuzz_model_index fuzz_mask
     fuzz_mask_npz fuzz_llama2c fuzz_gguf_convert fuzz_tasks fuzz_logits_input fuzz_learn_state fuzz_partial"
TARGETS=${*:-$ALL}

if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPATCHLLM_BUILD_FUZZ=ON -DPATCHLLM_BUILD_TESTS=OFF \
    -DPATCHLLM_BUILD_BENCH=OFF -DPATCHLLM_WITH_CUDA=OFF > /dev/null
fi
ninja -C "$BUILD" -j "$JOBS" > /dev/null

# Seeds: real files of every format. The model-based ones need ../shared and the release binary.
SEEDS=$OUT/seeds
mkdir -p "$SEEDS"/{gguf,json,tok_config,spm,llama2c_tok,text,safetensors,config,weights,packed,mask,npz,llama2c} \
  "$SEEDS"/{gguf_model,tasks,index,logits,learn_state,partial,chat}
cp tests/data/gguf/*.gguf "$SEEDS/gguf/"
for d in tests/data/tokenizer/bytelevel_*; do cp "$d/tokenizer.json" "$SEEDS/json/$(basename "$d").json"; done
for f in tests/data/tokenizer/*/tokenizer_config.json; do
  cp "$f" "$SEEDS/tok_config/$(basename "$(dirname "$f")").json"
done
cp tests/data/tokenizer/texts.json "$SEEDS/text/"
# fuzz_chat_template: every template of the chat-template golden file (Jinja feature cases and three chat styles).
python3 - tests/data/tokenizer/chat_golden.json "$SEEDS/chat" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
templates = [c["template"] for c in g["jinja"]] + list(g["templates"].values())
for i, t in enumerate(templates):
    open(f"{sys.argv[2]}/{i:03d}.jinja", "w").write(t)
PY
cp tests/data/gemma3-tiny/*.safetensors "$SEEDS/safetensors/"
cp tests/data/gemma3-tiny/config.json "$SEEDS/config/gemma3.json"
# fuzz_logits_input: input_ids [2, 3] and a 0/1 attention_mask, as tools/*_crosscheck.py write them (I64).
python3 - "$SEEDS/logits/ids_mask.safetensors" <<'PY'
import json, struct, sys
ids, mask = [1, 2, 3, 4, 5, 6], [1, 1, 1, 0, 1, 1]
blob = struct.pack("<6q", *ids) + struct.pack("<6q", *mask)
h = json.dumps({"input_ids": {"dtype": "I64", "shape": [2, 3], "data_offsets": [0, 48]},
                "attention_mask": {"dtype": "I64", "shape": [2, 3], "data_offsets": [48, 96]}}).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + blob)
PY
# fuzz_learn_state: a valid state of the target's own run, written by the target (LLVMFuzzerInitialize).
PATCHLLM_FUZZ_WRITE_SEED="$SEEDS/learn_state/learn_state.safetensors" "$BUILD/fuzz/fuzz_learn_state" -runs=0 > /dev/null 2>&1
# fuzz_partial: a valid partial file (perplexity state and a finished task), written by the target.
PATCHLLM_FUZZ_WRITE_SEED="$SEEDS/partial/out.json.partial" "$BUILD/fuzz/fuzz_partial" -runs=0 > /dev/null 2>&1
HAVE_MODEL=0
if [ -d "$SH/models/stories260K" ]; then
  if [ ! -x "$RELEASE/patchllm" ]; then
    cmake -S . -B "$RELEASE" -G Ninja > /dev/null && ninja -C "$RELEASE" patchllm > /dev/null
  fi
  BIN=$RELEASE/patchllm
  M=$OUT/stories260K
  [ -f "$M/hf/model.safetensors" ] || $BIN -q convert --from llama2c "$SH/models/stories260K/stories260K.bin" \
    --tokenizer "$SH/models/stories260K/tok512.bin" -o "$M/hf" --force
  [ -f "$M/wanda/masks.safetensors" ] || $BIN -q prune -m "$M/hf" --method wanda --pattern 2:4 --sparsity 0.5 \
    -f "$SH/data/tinystories/valid.txt" --nsamples 4 --seqlen 64 --seed 0 --force -o "$M/wanda" > /dev/null
  [ -f "$M/packed/model.safetensors" ] || $BIN -q export -m "$M/hf" --masks "$M/wanda/masks.safetensors" \
    --format packed -o "$M/packed" --force > /dev/null
  [ -f "$M/npz/mask_compressed.npz" ] || $BIN -q export -m "$M/hf" --masks "$M/wanda/masks.safetensors" \
    --format maskllm-npz -o "$M/npz" --force > /dev/null
  cp "$M/hf/tokenizer.json" "$SEEDS/json/stories260K.json"
  cp "$M/hf/tokenizer_config.json" "$SEEDS/tok_config/stories260K.json"
  cp "$SH/models/llama2-tokenizer/tokenizer.model" "$SEEDS/spm/"
  cp "$SH/models/stories260K/tok512.bin" "$SEEDS/llama2c_tok/"
  head -c 4096 "$SH/data/tinystories/valid.txt" > "$SEEDS/text/tinystories.txt"
  cp "$M/hf/model.safetensors" "$SEEDS/safetensors/stories260K.safetensors"
  cp "$M/hf/config.json" "$SEEDS/config/stories260K.json"
  cp "$M/hf/model.safetensors" "$SEEDS/weights/"
  # fuzz_model_index: the index of a one-shard checkpoint (every tensor in model.safetensors), as HF writes it.
  python3 - "$M/hf/model.safetensors" > "$SEEDS/index/stories260K.json" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
names = sorted(k for k in header if k != "__metadata__")
print(json.dumps({"metadata": {"total_size": 0}, "weight_map": {k: "model.safetensors" for k in names}}, indent=2))
PY
  cp "$M/packed/model.safetensors" "$SEEDS/packed/"
  cp "$M/wanda/masks.safetensors" "$SEEDS/mask/"
  cp "$M/npz/mask_compressed.npz" "$SEEDS/npz/"
  cp "$SH/models/stories260K/stories260K.bin" "$SEEDS/llama2c/"
  [ -f "$M/model.gguf" ] || $BIN -q convert --to gguf -m "$M/hf" -o "$M/model.gguf" --dtype f16 --force > /dev/null
  cp "$M/model.gguf" "$SEEDS/gguf_model/stories260K.gguf"
  # fuzz_tasks: the first line names the task.
  for f in "$SH"/data/tasks/*.jsonl; do
    task=$(basename "$f" .jsonl)
    { echo "$task"; head -n 8 "$f"; } > "$SEEDS/tasks/$task.txt"
  done
  HAVE_MODEL=1
else
  echo "fuzz.sh: $SH/models/stories260K absent: the model-based targets are skipped" >&2
fi

seed_of() {
  case $1 in
    fuzz_gguf) echo gguf ;; fuzz_tokenizer_json) echo json ;; fuzz_tokenizer_spm) echo spm ;;
    fuzz_tokenizer_llama2c) echo llama2c_tok ;; fuzz_tokenizer_encode) echo text ;;
    fuzz_tokenizer_config) echo tok_config ;; fuzz_chat_template) echo chat ;;
    fuzz_safetensors) echo safetensors ;; fuzz_model_config) echo config ;; fuzz_model_weights) echo weights ;;
    fuzz_model_weights_packed) echo packed ;; fuzz_model_index) echo index ;;
    fuzz_mask) echo mask ;; fuzz_mask_npz) echo npz ;;
    fuzz_llama2c) echo llama2c ;; fuzz_gguf_convert) echo gguf_model ;; fuzz_tasks) echo tasks ;;
    fuzz_logits_input) echo logits ;; fuzz_learn_state) echo learn_state ;; fuzz_partial) echo partial ;;
  esac
}
ROWS=()
TOTAL=0
for t in $TARGETS; do
  s=$(seed_of "$t")
  [ -n "$s" ] || { echo "fuzz.sh: unknown target $t (targets: $ALL)" >&2; exit 2; }
  bin=$BUILD/fuzz/$t
  envs=()
  shared=1  # its env names files made from ../shared
  case $t in
    fuzz_tokenizer_encode) envs=(PATCHLLM_FUZZ_TOKENIZER="$SH/models/llama2-tokenizer/tokenizer.model") ;;
    fuzz_tokenizer_config)
      envs=(PATCHLLM_FUZZ_TOKENIZER_JSON="$PWD/tests/data/tokenizer/bytelevel_llama3/tokenizer.json")
      shared=0 ;;
    fuzz_model_config|fuzz_model_weights|fuzz_model_index|fuzz_mask_npz)
      envs=(PATCHLLM_FUZZ_MODEL="$OUT/stories260K/hf") ;;
    fuzz_model_weights_packed)
      envs=(PATCHLLM_FUZZ_MODEL="$OUT/stories260K/packed")
      bin=$BUILD/fuzz/fuzz_model_weights ;;
    fuzz_llama2c) envs=(PATCHLLM_FUZZ_LLAMA2C_TOKENIZER="$SH/models/stories260K/tok512.bin") ;;
  esac
  if [ -z "$(ls -A "$SEEDS/$s")" ] || { [ ${#envs[@]} -gt 0 ] && [ $shared = 1 ] && [ $HAVE_MODEL = 0 ]; }; then
    ROWS+=("| $t | skipped (no seeds: ../shared absent) | | |")
    continue
  fi
  dir=$OUT/$t
  mkdir -p "$dir/corpus"
  log=$dir/log.txt
  # libFuzzer truncates inputs to 1 MiB unless told; the model seeds are larger.
  maxlen=$(find "$SEEDS/$s" -type f -printf '%s\n' | sort -n | tail -1)
  if [ -n "${RUNS:-}" ]; then limit=(-runs="$RUNS" -seed=1); else limit=(-max_total_time="$SECS"); fi
  echo "fuzz.sh: $t ${limit[*]}" >&2
  # Leak detection off: LibTorch keeps process-lifetime allocations that LeakSanitizer reports.
  env "${envs[@]}" ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=0 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$bin" "$dir/corpus" "$SEEDS/$s" \
    "${limit[@]}" -max_len=$((maxlen + 4096)) -rss_limit_mb=4096 -malloc_limit_mb=2048 -timeout=30 \
    -artifact_prefix="$dir/" \
    > "$log" 2>&1 || true
  runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  finds=$(find "$dir" -maxdepth 1 -name 'crash-*' -o -maxdepth 1 -name 'leak-*' -o -maxdepth 1 -name 'oom-*' \
            -o -maxdepth 1 -name 'timeout-*' | wc -l)
  # A target that stopped without a finding and without libFuzzer's closing line (bad setup) counts as one.
  if [ "$finds" -eq 0 ] && ! grep -qE '^Done [0-9]+ runs' "$log"; then finds="1 (no result, see log.txt)"; fi
  ROWS+=("| $t | ${runs:-0} | $finds | ${envs[*]:-} |")
  TOTAL=$((TOTAL + ${finds%% *}))
done
echo "| target | executions | findings | env |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
[ "$TOTAL" -eq 0 ] || { echo "fuzz.sh: $TOTAL finding(s); see $OUT/<target>/log.txt" >&2; exit 1; }
