#!/usr/bin/env bash
# PATCH quality table for docs/BENCHMARKS.md (issue 4): stories260K converted, masks learned on TinyStories
# train.txt, PPL on valid.txt. Rows: dense; one-shot magnitude / Wanda / SparseGPT 2:4; MaskLLM 2:4; PATCH-Joint
# and PATCH-Tile at 45/35/25%. usage: tools/learn_stories260k.sh [BUILD_DIR] [WORK_DIR]  (repo root; needs ../shared)
# Env: STEPS (200), MB (micro-batch, 8), SEQ (train seqlen, 256), TILE (16x16), PRIOR (sparsegpt), CHUNKS (0 = all).
set -euo pipefail
BUILD=${1:-build}
WORK=${2:-/tmp/learn_stories260k}
BIN=$BUILD/patchllm
SH=${PATCHLLM_SHARED_DIR:-../shared}
STEPS=${STEPS:-200}; MB=${MB:-8}; SEQ=${SEQ:-256}; TILE=${TILE:-16x16}; PRIOR=${PRIOR:-sparsegpt}
CHUNKS=${CHUNKS:-0}
mkdir -p "$WORK"
[ -f "$WORK/hf/model.safetensors" ] || $BIN -q convert --from llama2c "$SH/models/stories260K/stories260K.bin" \
  --tokenizer "$SH/models/stories260K/tok512.bin" -o "$WORK/hf"
SPLIT='\n<|endoftext|>\n'
ppl() { $BIN -q eval ppl -m "$WORK/hf" -f "$SH/data/tinystories/valid.txt" -c 512 --split-on "$SPLIT" --chunks "$CHUNKS" "$@" 2>/dev/null; }
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
echo "| method | target sparsity | achieved | PPL | gap to dense closed (vs SparseGPT 2:4) |"
echo "|---|---|---|---|---|"
dense=$(ppl); row dense 0 0 "$dense" ""
oneshot() {
  local out="$WORK/$1-2_4"
  [ -f "$out/masks.safetensors" ] || $BIN -q prune -m "$WORK/hf" --method "$1" --pattern 2:4 \
    -f "$SH/data/tinystories/train.txt" --split-on "$SPLIT" --nsamples 64 --seqlen 256 --seed 0 --force -o "$out" >/dev/null
  ppl --masks "$out/masks.safetensors"
}
for m in magnitude wanda; do row "$m 2:4" 0.5 0.5 "$(oneshot $m)" ""; done
sgpt=$(oneshot sparsegpt); row "sparsegpt 2:4" 0.5 0.5 "$sgpt" 0
learn() {  # method sparsity
  local out="$WORK/$1-$2"
  [ -f "$out/masks.safetensors" ] || $BIN -q prune -m "$WORK/hf" --method "$1" --sparsity "$2" --tile "$TILE" \
    -f "$SH/data/tinystories/train.txt" --split-on "$SPLIT" --prior "$PRIOR" --nsamples 64 --seqlen 256 \
    --steps "$STEPS" --micro-batch "$MB" --train-seqlen "$SEQ" --seed 0 --force -o "$out" ${LEARN_FLAGS:-} >/dev/null
  local p ach
  p=$(ppl --masks "$out/masks.safetensors")
  ach=$(python3 -c "import json;print(round(json.load(open('$out/learn_report.json'))['achieved_sparsity'],4))")
  row "$1" "$2" "$ach" "$p" "$(python3 -c "print(f'{($sgpt-$p)/($sgpt-$dense):.1%}')")"
}
learn maskllm 0.5
for s in 0.45 0.35 0.25; do learn patch-joint $s; done
for s in 0.45 0.35 0.25; do learn patch-tile $s; done
