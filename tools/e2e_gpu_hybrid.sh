#!/usr/bin/env bash
# On the GPU machine: end-to-end generation with the hybrid kernels. Part 1 (correctness): a 2-layer LLaMA-2-7B-shaped
# fp32 model, a hybrid mask (magnitude 2:4, half the tiles dense), `export --format packed` and `--format hf`,
# `eval logits` of both on CUDA in bf16 (packed: hybrid kernels; hf: cuBLAS) compared in Python. Part 2 (speed): a random LLaMA-2-7B bf16 checkpoint,
# bench_model prefill 2048 tokens and decode batch 1 and 16, dense vs --hybrid-f 0.5 / 0.9 / 1.0 (packed in memory:
# random tile map, magnitude 2:4 inside the 2:4 tiles) in one process. Prints a short table last.
# Part 2 decodes both eagerly and through a CUDA graph (DecodeGraph), with q|k|v and gate|up fused, and times the dense
# model unfused as well. Needs a CUDA PyTorch (its LibTorch and python3 with transformers, for
# tools/make_random_checkpoint.py). Env: PART=1|2|all (default all: one call may not fit the device tool's 10 minutes;
# PART=1 then PART=2 in back-to-back calls reuse build-gpu and the checkpoints), TESTS="test_a test_b" builds those
# ctest executables too and runs them first, REPS, FS (hybrid fractions), BENCH_ARGS (extra bench_model flags),
# MODEL (part 2's config in tools/model_configs.py, default llama2-7b).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
source "$(dirname "$0")/gpu_common.sh"
export PYTHONUNBUFFERED=1
B=$PWD/build-gpu
P=$B/patchllm
TORCH_PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
t0=$(date +%s)
PART=${PART:-all}
TESTS=${TESTS:-}
cmake -S . -B build-gpu -G Ninja -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DPATCHLLM_BUILD_TESTS=$([ -n "$TESTS" ] && echo ON || echo OFF) \
  -DPATCHLLM_BUILD_BENCH=ON -DPATCHLLM_PCRE2_INCLUDE=$PWD/.deps/include -DCMAKE_CUDA_ARCHITECTURES=90a \
  > "$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
ninja -C build-gpu patchllm bench_model $TESTS > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -30; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
run_tests "$TESTS"

if [ "$PART" != 2 ]; then
# Part 1: packed directory through Model::load on CUDA vs the HF export of the same hybrid mask (magnitude 2:4, then
# a seeded half of the 128x128 tiles made dense), bf16 both; the HF export in fp32 gives the bf16 noise level.
ckpt llama2-7b /tmp/e2e-2L float32 2
$P -q prune -m /tmp/e2e-2L --method magnitude --pattern 2:4 --device cuda --dtype fp32 -o /tmp/e2e-p --force > /dev/null \
  || { echo "part 1: prune failed"; exit 1; }
python3 - <<'PY'
import numpy as np, torch
from safetensors import safe_open
from safetensors.torch import save_file
f = safe_open("/tmp/e2e-p/masks.safetensors", "pt")
meta = f.metadata(); t = {k: f.get_tensor(k) for k in f.keys()}
R, C = map(int, meta["tile_size"].split("x"))
g = torch.Generator().manual_seed(0)
for k in [k for k in t if k.endswith(".tile_map")]:
    p = k[: -len(".tile_map")]
    N, K = t[p + ".shape"].tolist()
    tm = (torch.rand(t[k].shape, generator=g) < 0.5).to(torch.uint8)
    keep = np.unpackbits(t[p + ".mask24"].numpy())[: N * K].reshape(N, K).astype(bool)
    keep |= ~tm.bool().repeat_interleave(R, 0).repeat_interleave(C, 1)[:N, :K].numpy()  # dense tiles keep all
    t[p + ".mask24"] = torch.from_numpy(np.packbits(keep.reshape(-1)))
    t[k] = tm
save_file(t, "/tmp/e2e-p/hybrid.safetensors", metadata=meta)
save_file({"input_ids": torch.randint(3, 32000, (2, 512), generator=g)}, "/tmp/e2e-ids.safetensors")
PY
$P -q export -m /tmp/e2e-2L --masks /tmp/e2e-p/hybrid.safetensors -o /tmp/e2e-hf --force \
  && $P -q export -m /tmp/e2e-2L --masks /tmp/e2e-p/hybrid.safetensors -o /tmp/e2e-packed --format packed --force \
  || { echo "part 1: export failed"; exit 1; }
for run in "hf bf16" "packed bf16" "hf fp32"; do
  set -- $run
  $P -q eval logits -m /tmp/e2e-$1 -i /tmp/e2e-ids.safetensors -o /tmp/e2e-logits-$1-$2.safetensors --device cuda --dtype $2 \
    || { echo "part 1: eval logits on $1 ($2) failed"; exit 1; }
done
python3 - "$OUT/e2e_check.json" <<'PY' | tee "$OUT/e2e_check.log"
import json, sys, torch
from safetensors.torch import load_file
L = lambda n: load_file(f"/tmp/e2e-logits-{n}.safetensors")["logits"].double()
def cmp(a, b):
    return {"max_abs_err": (a - b).abs().max().item(), "max_abs_logit": b.abs().max().item(),
            "rel_mean_err": ((a - b).abs().mean() / b.abs().mean()).item(),
            "same_top1": (a.argmax(-1) == b.argmax(-1)).double().mean().item()}
hf, packed, ref = L("hf-bf16"), L("packed-bf16"), L("hf-fp32")
r = {"packed_bf16_vs_hf_bf16": cmp(packed, hf), "packed_bf16_vs_hf_fp32": cmp(packed, ref),
     "hf_bf16_vs_hf_fp32": cmp(hf, ref)}
json.dump(r, open(sys.argv[1], "w"), indent=1)
print("2-layer LLaMA-2-7B-shaped, hybrid mask (half the tiles dense), 2x512 tokens, CUDA:")
for k, v in r.items():
    print(f"  {k:24s} rel mean err {v['rel_mean_err']:.2e}  max abs err {v['max_abs_err']:.3g} of {v['max_abs_logit']:.3g}"
          f"  same top-1 {v['same_top1']:.4f}")
PY

fi
[ "$PART" = 1 ] && { ckpt llama2-7b /tmp/llama2-7b bfloat16; echo "part 1 done, 7B checkpoint made: $(( $(date +%s) - t0 )) s"; exit 0; }

# Part 2: speed on the full 7B shape.
MODEL=${MODEL:-llama2-7b}
ckpt $MODEL /tmp/$MODEL bfloat16
$B/bench/bench_model -m /tmp/$MODEL --device cuda --prefill 2048 --batches 1,16 --decode 64 -r ${REPS:-5} \
  --hybrid-f ${FS:-0.5,0.9,1.0} --seed 0 --cuda-graph ${BENCH_ARGS:-} > "$OUT/e2e_bench.log" 2> "$OUT/e2e_bench.err" \
  || { tail -5 "$OUT/e2e_bench.err"; exit 1; }
grep '^{' "$OUT/e2e_bench.log" > "$OUT/e2e_bench.jsonl"
echo "total: $(( $(date +%s) - t0 )) s"
[ -f "$OUT/e2e_check.log" ] && cat "$OUT/e2e_check.log"
echo "$MODEL-shaped random bf16, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), tok/s and x vs dense:"
grep -v '^{' "$OUT/e2e_bench.log" | sed '/^$/d'
