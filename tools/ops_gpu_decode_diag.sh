#!/usr/bin/env bash
# GPU machine, repo root, one device-tool call: where the split-K decode kernel's time goes at M = 16. Builds copies
# of the kernel with one part removed (results wrong, timing only): nomma (MMAs replaced by one FADD of the operands,
# so the loads stay live), nox (no x staging: no cp.async, the barrier kept), noreduce (every CTA writes y: no
# partials, fence, counter, cluster barrier or reduction), nomma+nox; and one candidate that keeps the results right,
# relfence (the workspace reduction's GPU-scope fence in every thread replaced by one acq_rel atomic per CTA after the
# CTA barrier, as CUTLASS's split-K semaphore does; bench_ops validates it against cuBLAS, and its VALIDATION lines
# are printed). Times each with bench_ops --quick --decode --ms 1,16 beside the real kernel, whose run also sweeps
# fixed k-splits with and without PDL. Prints µs per variant; logs under $OUT. VARS picks the variants (default all,
# e.g. VARS="base nox"), MS the token counts (default 1,16).
set -u -o pipefail
OUT=${OUT:-/tmp/ops_out}
mkdir -p "$OUT"
NVCC="nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Ibench"
T0=$SECONDS
mk() {  # mk NAME TRANSFORMS...: /tmp/diag/NAME/src with the python transforms applied
  rm -rf /tmp/diag/$1 && mkdir -p /tmp/diag/$1 && cp -r src /tmp/diag/$1/
  python3 - /tmp/diag/$1/src/ops "${@:2}" <<'PY'
import re, sys
d, ts = sys.argv[1], sys.argv[2:]
g = open(d + '/hybrid_gemm.cuh').read(); h = open(d + '/hybrid_decode.cuh').read()
if 'nomma' in ts:
    g, n1 = re.subn(r'(void mma_dense\(float \(&d\)\[4\], const uint4& a, uint32_t b0, uint32_t b1\) \{).*?\n\}\n',
                    r'\1\n  d[0] += __uint_as_float(a.x ^ a.y ^ a.z ^ a.w ^ b0 ^ b1);\n}\n', g, count=1, flags=re.S)
    g, n2 = re.subn(r'(void mma_sp\(float \(&d\)\[4\], const uint4& a, const uint32_t \(&b\)\[4\], uint32_t meta\) \{)'
                    r'.*?\n\}\n', r'\1\n  d[SEL] += __uint_as_float(a.x ^ a.w ^ b[0] ^ b[3] ^ meta);\n}\n', g, count=1,
                    flags=re.S)
    assert n1 == 1 and n2 == 1
if 'nox' in ts:
    h, n = re.subn(r'  for \(int q = threadIdx.x; q < pieces; q \+= NTHREADS\) \{.*?\n  \}\n', '  (void)pieces;\n', h,
                   count=1, flags=re.S)
    assert n == 1
if 'noreduce' in ts:
    assert 'if (W < WARPS || p.S == 1) {' in h and 'if (W == WARPS && p.cluster) {' in h
    h = h.replace('if (W < WARPS || p.S == 1) {', 'if (true) {').replace('if (W == WARPS && p.cluster) {',
                                                                        'if (false) {')
if 'relfence' in ts:
    a = ('  __threadfence();\n  __syncthreads();\n  __shared__ int last;\n  if (threadIdx.x == 0) {\n'
         '    const int old = atomicAdd(p.counters + key, 1);\n')
    b = ('  __syncthreads();\n  __shared__ int last;\n  if (threadIdx.x == 0) {\n    int old;\n'
         '    asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], 1;" : "=r"(old) : "l"(p.counters + key) : '
         '"memory");\n')
    assert h.count(a) == 1 and h.count('  if (!last) return;\n  __threadfence();\n') == 1
    h = h.replace(a, b).replace('  if (!last) return;\n  __threadfence();\n', '  if (!last) return;\n')
open(d + '/hybrid_gemm.cuh', 'w').write(g); open(d + '/hybrid_decode.cuh', 'w').write(h)
PY
}
VARS=${VARS:-"base nomma nox noreduce nomma_nox relfence"}
for v in $VARS; do mk $v $(echo $v | tr _ ' '); done
for v in $VARS; do
  ( $NVCC -I/tmp/diag/$v/src -c /tmp/diag/$v/src/ops/hybrid_gemm.cu -o /tmp/diag/$v/hg.o &&
    $NVCC -I/tmp/diag/$v/src bench/bench_ops.cu /tmp/diag/$v/hg.o -lcublas -o /tmp/diag/$v/bench_ops ) \
    >/tmp/diag/$v/build.log 2>&1 &
done
wait
for v in $VARS; do [ -x /tmp/diag/$v/bench_ops ] || { echo "build $v failed"; tail -5 /tmp/diag/$v/build.log; }; done
echo "build ${SECONDS}s"
for v in $VARS; do
  extra=""; [ $v = base ] && extra="--extra"
  timeout 200 /tmp/diag/$v/bench_ops --quick --decode $extra --ms ${MS:-1,16} --out /tmp/diag/$v/b >/dev/null \
    2>/tmp/diag/$v/bench.log
  echo "$v rc=$? ($((SECONDS - T0))s)"
done
cp /tmp/diag/base/bench.log "$OUT/diag_base_bench.log"
python3 - $VARS <<'PY' | tee "$OUT/diag_table.md"
import csv, sys
vs = sys.argv[1:]
data = {}
for v in vs:
    try:
        for r in csv.DictReader(open(f'/tmp/diag/{v}/b.csv')):
            data[(v, r['shape'], r['M'], r['kernel'], round(float(r['f']), 1))] = float(r['us'])
    except FileNotFoundError:
        pass
keys = sorted({(k[1], int(k[2]), k[4]) for k in data if k[3] == 'hybrid'})
print('| shape | M | f | cuBLAS | ' + ' | '.join(f'{v} / pdl' for v in vs) + ' |')
print('|---|---|---|---|' + '---|' * len(vs))
for sh, m, f in keys:
    cb = data.get(('base', sh, str(m), 'cublas', 0.0), 0)
    cells = [f"{data.get((v, sh, str(m), 'hybrid', f), 0):.1f} / {data.get((v, sh, str(m), 'hybrid-pdl', f), 0):.1f}"
             for v in vs]
    print(f'| {sh} | {m} | {f} | {cb:.1f} | ' + ' | '.join(cells) + ' |')
PY
grep "^sweep" /tmp/diag/base/bench.log | grep "M=16" | sed 's/^sweep //'
echo "relfence validation (bench_ops vs cuBLAS, M = 16): $(grep -c '^validated' /tmp/diag/relfence/bench.log) passed," \
  "$(grep -c 'VALIDATION FAILED' /tmp/diag/relfence/bench.log) failed"
