#!/usr/bin/env bash
# PPL table for docs/benchmarks/pruning.md: stories260K converted, calibration on TinyStories train, PPL on valid.
# usage: tools/prune_stories260k.sh [BUILD_DIR] [WORK_DIR]   (run from the repository root; needs ../shared)
set -euo pipefail
BUILD=${1:-build-prune}
WORK=${2:-/tmp/prune_stories260k}
BIN=$BUILD/patchllm
SH=${PATCHLLM_SHARED_DIR:-../shared}
NS=${NSAMPLES:-64}
SL=${SEQLEN:-256}
mkdir -p "$WORK"
[ -f "$WORK/hf/model.safetensors" ] || $BIN -q convert --from llama2c "$SH/models/stories260K/stories260K.bin" \
  --tokenizer "$SH/models/stories260K/tok512.bin" -o "$WORK/hf"
CHUNKS=${CHUNKS:-0}  # 0 = the whole valid.txt
ppl() { $BIN -q eval ppl -m "$1" -f "$SH/data/tinystories/valid.txt" -c 512 --split-on '\n<|endoftext|>\n' --chunks "$CHUNKS" "${@:2}" 2>/dev/null; }
echo "| method | pattern | sparsity | PPL (mask on frozen weights) | PPL (SparseGPT updated weights) |"
echo "|---|---|---|---|---|"
echo "| dense | - | 0 | $(ppl "$WORK/hf") | |"
run() {  # method pattern sparsity
  local out="$WORK/$1-${2/:/_}-$3"
  $BIN -q prune -m "$WORK/hf" --method "$1" --pattern "$2" --sparsity "$3" -f "$SH/data/tinystories/train.txt" \
    --split-on '\n<|endoftext|>\n' --nsamples "$NS" --seqlen "$SL" --seed 0 --force -o "$out" > /dev/null
  local upd=""
  if [ "$1" = sparsegpt ] && [ "$3" = 0.5 ]; then upd=$(ppl "$out/sparsegpt-hf"); fi
  echo "| $1 | $2 | $3 | $(ppl "$WORK/hf" --masks "$out/masks.safetensors") | $upd |"
}
for m in magnitude wanda sparsegpt; do run $m 2:4 0.5; done
for s in 0.5 0.45 0.35 0.25; do for m in magnitude wanda sparsegpt; do run $m unstructured $s; done; done
