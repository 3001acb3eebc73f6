#!/usr/bin/env bash
# On the GPU machine (issue 5): WikiText-2 perplexity of one real pretrained model on the WHOLE file, dense and with
# one-shot 2:4 masks (magnitude, Wanda, SparseGPT), patchllm beside transformers, both fp32 on CUDA (TF32 off).
#
#   bash tools/real_gpu_ppl.sh NAME [PATCHLLM_BIN]        (NAME as in scripts/get-models.sh)
#
# Inputs: the GGUF's pieces in $PARTS (NAME.gguf.partNN, joined in name order and checked against the sha256 pinned
# in scripts/get-models.sh; see tools/real_gpu_crosscheck.sh for how they travel), $WIKI (wiki.test.raw) and $CALIB
# (TinyStories train.txt). Per row: `patchllm eval ppl` on the converted fp32 model (with --masks for a mask, which
# is applied in memory), then `patchllm export` of the masked model (exact zeros) and tools/ppl_transformers.py on
# that directory, which also compares the token-id digest. SparseGPT's own weight update (sparsegpt-hf/) gets both
# too. Calibration: 128 windows x 2048 tokens of TinyStories train, seed 0 (the paper's count and length; the text is
# what ../shared has). Results: $RES/NAME/*.json, one line per row in $RES/NAME/rows.tsv, a log in $RES/NAME/log.
set -uo pipefail
NAME=${1:?usage: real_gpu_ppl.sh NAME [PATCHLLM_BIN]}
P=${2:-$PWD/build-gpu/patchllm}
PARTS=${PARTS:-/tmp/gguf-parts}
RES=${RES:-/tmp/res}
WORK=${WORK:-/tmp/work}
WIKI=${WIKI:-$PWD/.deps/gpu-data/wiki.test.raw}
CALIB=${CALIB:-$PWD/.deps/gpu-data/train.txt}
TOOLS=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$TOOLS")
NS=${NS:-128}; SL=${SL:-2048}
METHODS=${METHODS:-magnitude wanda sparsegpt}
SPARSEGPT_WEIGHTS=${SPARSEGPT_WEIGHTS:-1}   # 0: SparseGPT's mask only (no sparsegpt-hf/ copy, no "-updated" row)
export PYTHONUNBUFFERED=1
R=$RES/$NAME; mkdir -p "$R" "$WORK"; LOG=$R/log
say() { echo "[$(date +%H:%M:%S)] $NAME: $*" | tee -a "$LOG"; }

want=$(grep -E "^\s*\[$NAME\]=" "$ROOT/scripts/get-models.sh" | sed -E 's/.* ([0-9a-f]{64})".*/\1/')
[ -n "$want" ] || { say "not in scripts/get-models.sh"; exit 2; }
G=$WORK/$NAME.gguf; M=$WORK/$NAME
cat "$PARTS/$NAME.gguf.part"* > "$G" || { say "no pieces in $PARTS"; exit 1; }
got=$(sha256sum "$G" | cut -d' ' -f1)
[ "$got" = "$want" ] || { say "sha256 $got, want $want (pieces missing?)"; exit 1; }
say "gguf $(stat -c %s "$G") bytes, sha256 ok"
"$P" convert --from gguf "$G" -o "$M" --fp32 --force >> "$LOG" 2>&1 || { say "convert failed"; exit 1; }
rm -f "$G"
say "converted"

# row LABEL OURS_ARGS... -- HF_DIR : ours on the dense dir (+ mask), transformers on HF_DIR
row() {
  local label=$1; shift
  local ours=() hf
  while [ "$1" != "--" ]; do ours+=("$1"); shift; done; hf=$2
  local t0=$SECONDS
  "$P" eval ppl "${ours[@]}" -f "$WIKI" -c 4096 --device cuda --dtype fp32 --json "$R/ours_$label.json" >> "$LOG" 2>&1 \
    || { say "$label: eval ppl failed"; return 1; }
  local t1=$SECONDS
  python3 "$TOOLS/ppl_transformers.py" -m "$hf" -f "$WIKI" -c 4096 --device cuda \
    --ours "$R/ours_$label.json" --json "$R/hf_$label.json" >> "$LOG" 2>&1
  local rc=$?
  python3 - "$R/ours_$label.json" "$R/hf_$label.json" "$label" $((t1 - t0)) $((SECONDS - t1)) $rc >> "$R/rows.tsv" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
try:
    h = json.load(open(sys.argv[2]))
except Exception:
    h = {}
print("\t".join(map(str, [sys.argv[3], o["n_tokens"], o["n_windows"], o.get("n_scored", ""), f"{o['ppl']:.4f}",
      f"{h['ppl']:.4f}" if h else "-", f"{o['ppl'] / h['ppl']:.7f}" if h else "-",
      h.get("ids_sha256_equal_ours", "-"), f"{o.get('nll_mean', float('nan')):.8f}",
      f"{h['nll_mean']:.8f}" if h else "-", sys.argv[4], sys.argv[5], "rc=" + sys.argv[6]])))
PY
  say "$label: $(tail -1 "$R/rows.tsv")"
}

row dense -m "$M" -- "$M"
for meth in $METHODS; do
  t0=$SECONDS
  nw=(); [ "$meth" = sparsegpt ] && [ "$SPARSEGPT_WEIGHTS" = 0 ] && nw=(--no-weights)
  "$P" prune -m "$M" --method "$meth" --pattern 2:4 -f "$CALIB" --split-on '\n<|endoftext|>\n' \
    --nsamples "$NS" --seqlen "$SL" -s 0 --device cuda --dtype fp32 -o "$WORK/$NAME-$meth" --force "${nw[@]}" >> "$LOG" 2>&1 \
    || { say "prune $meth failed"; continue; }
  say "prune $meth: $((SECONDS - t0)) s"
  "$P" export -m "$M" --masks "$WORK/$NAME-$meth/masks.safetensors" -o "$WORK/$NAME-$meth-hf" --force >> "$LOG" 2>&1 \
    || { say "export $meth failed"; continue; }
  row "$meth" -m "$M" --masks "$WORK/$NAME-$meth/masks.safetensors" -- "$WORK/$NAME-$meth-hf"
  rm -rf "$WORK/$NAME-$meth-hf"
  if [ -d "$WORK/$NAME-$meth/sparsegpt-hf" ]; then
    row "$meth-updated" -m "$WORK/$NAME-$meth/sparsegpt-hf" -- "$WORK/$NAME-$meth/sparsegpt-hf"
    rm -rf "$WORK/$NAME-$meth/sparsegpt-hf"
  fi
done
rm -rf "$M"
say "done"
