#!/usr/bin/env bash
# On the GPU machine: a real pretrained model (issue 5), converted by patchllm from its GGUF, against HF transformers,
# both on CUDA in fp32 (TF32 off): weights vs transformers' own GGUF loader, tokenizer on mixed texts, logits of four
# prompts and a left-padded batch (max rel. error <= 1e-4), greedy generation (identical text). The tool the checks
# come from is tools/gguf_check_transformers.py (the same checks as on the CPU in docs/benchmarks/real-models.md §1).
#
# The GGUF reaches the machine in pieces, because the device tool carries at most 64 MiB per call: on the CPU side
#   mkdir -p .xfer && split -b 50M -d models/NAME.gguf /tmp/NAME.gguf.part   (then one piece per call in .xfer/)
# and each call starts with `mkdir -p /tmp/gguf-parts && cp .xfer/* /tmp/gguf-parts/` (the machine stays warm between
# calls only 30 s, so the calls follow each other at once). This script joins the pieces in name order, checks the
# sha256 pinned in scripts/get-models.sh, converts, and runs the checks.
# Usage (repo root): bash tools/real_gpu_crosscheck.sh NAME [PATCHLLM_BIN]   (gguf-py: a wheel in .whl/)
set -uo pipefail
NAME=${1:?usage: real_gpu_crosscheck.sh NAME [PATCHLLM_BIN]}
P=${2:-$PWD/build-gpu/patchllm}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PARTS=${PARTS:-/tmp/gguf-parts}
export PYTHONUNBUFFERED=1
want=$(grep -E "^\s*\[$NAME\]=" scripts/get-models.sh | sed -E 's/.* ([0-9a-f]{64})".*/\1/')
[ -n "$want" ] || { echo "real_gpu_crosscheck: $NAME is not in scripts/get-models.sh"; exit 2; }
G=/tmp/$NAME.gguf
cat "$PARTS/$NAME.gguf.part"* > "$G" || { echo "real_gpu_crosscheck: no pieces of $NAME in $PARTS"; exit 1; }
got=$(sha256sum "$G" | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "real_gpu_crosscheck: $G sha256 $got, want $want (pieces missing?)"; exit 1; }
echo "$NAME.gguf: $(stat -c %s "$G") bytes, sha256 ok"
if ls .whl/gguf-*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/gguf-*.whl \
    && export PYTHONPATH=/tmp/site
fi
python3 -c "import gguf, transformers, torch; print('gguf', gguf.__version__ if hasattr(gguf, '__version__') else '?',
'transformers', transformers.__version__, 'torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
t0=$(date +%s)
$P convert --from gguf "$G" -o /tmp/$NAME --fp32 --force > "$OUT/convert_$NAME.log" 2>&1 \
  || { tail -5 "$OUT/convert_$NAME.log"; exit 1; }
echo "convert: $(( $(date +%s) - t0 )) s"
python3 tools/gguf_check_transformers.py "$G" /tmp/$NAME --patchllm "$P" --device cuda 2>&1 | tee "$OUT/crosscheck_$NAME.log"
rc=${PIPESTATUS[0]}
echo "crosscheck $NAME on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1): rc=$rc"
exit $rc
