#!/usr/bin/env bash
# CPU machine: syntax-check every C++ source against a CUDA LibTorch 2.x's headers, with the macros a CUDA build
# defines (PATCHLLM_TORCH_HAS_CUDA, PATCHLLM_HAVE_CUDA_KERNELS), so the code paths only a GPU build compiles are
# checked where no GPU (and no CUDA LibTorch) is. Downloads the torch wheel once (pip, ~0.9 GB) into TORCH_DIR and
# unpacks its headers. Env: TORCH_VERSION (2.5.1), TORCH_DIR (/tmp/torch-headers), JOBS (nproc).
set -u -o pipefail
cd "$(dirname "$0")/.."
V=${TORCH_VERSION:-2.5.1}
D=${TORCH_DIR:-/tmp/torch-headers}
if [ ! -d "$D/torch/include" ]; then
  mkdir -p "$D"
  pip download "torch==$V" --no-deps -d "$D/whl" -q || { echo "error: pip download torch==$V failed"; exit 1; }
  (cd "$D" && unzip -q -o whl/torch-*.whl 'torch/include/*') || { echo "error: unzip of the torch wheel failed"; exit 1; }
fi
[ -f build/generated/patchllm_version.h ] \
  || { echo "error: configure build/ first (cmake -S . -B build), for build/generated"; exit 1; }
fail=0
files=$(ls src/*/*.cc tests/*.cc bench/*.cc 2>/dev/null)
check() {
  c++ -std=gnu++17 -fsyntax-only -Wall -Wextra -Wno-unused-parameter -D_GLIBCXX_USE_CXX11_ABI=0 \
    -DPATCHLLM_TORCH_HAS_CUDA=1 -DPATCHLLM_HAVE_CUDA_KERNELS=1 -DPCRE2_CODE_UNIT_WIDTH=8 \
    -DPATCHLLM_TORCH_VERSION='"check"' -DPATCHLLM_SOURCE_DIR='"."' -DPATCHLLM_CLI_PATH='"patchllm"' -Isrc -Ibuild/generated \
    -Itests -Ibench -I.deps/include -isystem "$D/torch/include" -isystem "$D/torch/include/torch/csrc/api/include" \
    -isystem /usr/local/cuda/include "$1" > "/tmp/torch2check.$(echo "$1" | tr / _).log" 2>&1 \
    || { echo "FAIL $1"; head -20 "/tmp/torch2check.$(echo "$1" | tr / _).log"; }
}
export -f check; export D
out=$(printf '%s\n' $files | xargs -P "${JOBS:-$(nproc)}" -I{} bash -c 'check {}')
echo "$out"
n=$(printf '%s\n' $files | wc -l)
bad=$(echo "$out" | grep -c '^FAIL')
echo "checked $n files against torch $V headers (CUDA macros on): $bad failed"
[ "$bad" = 0 ]
