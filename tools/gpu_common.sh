# Shared by the GPU-machine scripts (source it): run_tests, ckpt and cusparselt_flags. Needs OUT.
# run_tests "test_a test_b": runs build-gpu/tests/<name> each, logs under $OUT, prints a verdict line and the failures.
run_tests() {
  for t in $1; do
    build-gpu/tests/$t > "$OUT/$t.log" 2>&1; echo "$t rc=$? :: $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUT/$t.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED  \]|Failure|Expected|Which is|SKIPPED \]' "$OUT/$t.log" | head -12
  done
}
# ckpt name dir dtype [layers]: a random-weight checkpoint of a real config (tools/make_random_checkpoint.py), once,
# with the LLaMA-2 tokenizer (.deps/gpu-data/tokenizer.model, from ../shared) beside it where it is there.
ckpt() {
  [ -f "$2/config.json" ] || python3 tools/make_random_checkpoint.py "$1" "$2" --dtype "$3" ${4:+--layers $4} > /dev/null
  [ -f .deps/gpu-data/tokenizer.model ] && cp .deps/gpu-data/tokenizer.model "$2/"
  true
}
# cusparselt_flags: nvcc flags that build bench/bench_ops.cu with the cuSPARSELt baseline (from the Python tree),
# or nothing where it is not installed.
cusparselt_flags() {
  local csl lib
  csl=$(python3 -c "import nvidia.cusparselt as m,os;print(os.path.dirname(m.__file__))" 2>/dev/null || true)
  [ -z "$csl" ] && csl=$(find / -path /proc -prune -o -type d -path '*site-packages/nvidia/cusparselt' -print \
    2>/dev/null | head -1)
  if [ -n "$csl" ] && [ -f "$csl/include/cusparseLt.h" ]; then
    lib=$(ls "$csl"/lib/libcusparseLt.so* | head -1)
    echo "-DPATCHLLM_HAVE_CUSPARSELT -I$csl/include -L$csl/lib -l:$(basename "$lib") -Xlinker -rpath=$csl/lib"
  fi
}
