#!/usr/bin/env python3
"""Summarise a Kineto Chrome trace (PATCHLLM_PROFILE) by CUDA kernel: total time per kind and the top kernels.
Usage: profile_summary.py TRACE.json [LABEL] -> a short text table on stdout."""
import collections, json, re, sys

# First match wins: attention before GEMM, because cuDNN's attention kernels are named ..._sdpa_sm90_flash_...
KINDS = [("attention", r"flash|fmha|attention|efficient|sdpa"),
         ("gemm (cuBLAS)", r"gemm|xmma|nvjet|cutlass|sm90_|sm80_|splitKreduce"),
         ("AdamW", r"adamw"),
         ("fused mask kernels", r"tile_fwd|tile_bwd|joint_fwd|joint_bwd"),
         ("reductions", r"reduce|norm_kernel|softmax|argmax|sum_"),
         ("elementwise", r"elementwise|vectorized|unrolled|CatArray|index|gather|scatter|copy|fill"),
         ("other", r".")]

try:
    trace = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"{sys.argv[1]}: not a readable Chrome trace ({e})")
ev = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
kern = [e for e in ev if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
if not kern:
    print("no CUDA kernels in the trace"); sys.exit(0)
t0 = min(e["ts"] for e in kern); t1 = max(e["ts"] + e.get("dur", 0) for e in kern)
by_kind, by_name, n_name = collections.Counter(), collections.Counter(), collections.Counter()
for e in kern:
    name = e["name"]; d = e.get("dur", 0) / 1000.0
    by_name[name] += d; n_name[name] += 1
    for k, rx in KINDS:
        if re.search(rx, name, re.I):
            by_kind[k] += d; break
total = sum(by_kind.values())
print(f"== {sys.argv[2] if len(sys.argv) > 2 else sys.argv[1]}: {len(kern)} kernels, {total:.1f} ms busy "
      f"over a {(t1 - t0) / 1000:.1f} ms window")
for k, _ in KINDS:
    if by_kind[k]:
        print(f"  {k:20s} {by_kind[k]:8.1f} ms  {100 * by_kind[k] / total:5.1f}%")
print("  top kernels (ms, calls):")
for name, d in by_name.most_common(14):
    print(f"    {d:8.1f} {n_name[name]:6d}  {name[:110]}")
