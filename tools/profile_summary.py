#!/usr/bin/env python3
"""Summarise a Kineto Chrome trace (PATCHLLM_PROFILE) by CUDA kernel (total time per kind, the top kernels) and by
host op (the top ops by inclusive time).
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

# Host side: where the wall time goes when the GPU waits (per-shape plans, allocations, syncs). Inclusive times, so a
# parent op counts its children too.
cpu = [e for e in ev if e.get("cat") == "cpu_op"]
if cpu:
    w0 = min(e["ts"] for e in cpu); w1 = max(e["ts"] + e.get("dur", 0) for e in cpu)
    tot, cnt = collections.Counter(), collections.Counter()
    for e in cpu:
        tot[e["name"]] += e.get("dur", 0) / 1000.0; cnt[e["name"]] += 1
    print(f"  host ops over a {(w1 - w0) / 1000:.1f} ms window, top by inclusive time (ms, calls, max ms):")
    mx = collections.Counter()
    for e in cpu:
        mx[e["name"]] = max(mx[e["name"]], e.get("dur", 0) / 1000.0)
    for name, d in tot.most_common(12):
        print(f"    {d:8.1f} {cnt[name]:6d} {mx[name]:8.2f}  {name[:100]}")

# With PATCHLLM_PROFILE_MEMORY=1 the trace holds the allocator's events: the CUDA peak and the ops around it.
mem = [e for e in trace.get("traceEvents", []) if e.get("name") == "[memory]" and e.get("ph") == "i"
       and int(e.get("args", {}).get("Device Id", -1)) >= 0]
if mem:
    peak = max(mem, key=lambda e: e["args"]["Total Allocated"])
    ts = peak["ts"]
    print(f"  CUDA allocated peak {peak['args']['Total Allocated'] / 2**30:.3f} GiB "
          f"(min in the step {min(e['args']['Total Allocated'] for e in mem) / 2**30:.3f} GiB); ops around it:")
    cpu = [e for e in ev if e.get("cat") == "cpu_op" and e["ts"] <= ts <= e["ts"] + e.get("dur", 0)]
    for e in sorted(cpu, key=lambda e: -e.get("dur", 0))[:10]:
        print(f"    {e.get('dur', 0) / 1000:8.2f} ms  {e['name'][:100]}")
    # The allocated bytes when each backward function starts, for the highest few: where the peak region sits.
    starts = sorted((e for e in ev if e.get("cat") == "cpu_op" and e["name"].startswith("autograd::engine")),
                    key=lambda e: e["ts"])
    mem_ts = sorted((e["ts"], e["args"]["Total Allocated"]) for e in mem)
    import bisect
    keys = [t for t, _ in mem_ts]
    hi = []
    for e in starts:
        i = bisect.bisect_right(keys, e["ts"]) - 1
        if i >= 0:
            hi.append((mem_ts[i][1], e["name"]))
    print("  allocated at the start of the backward functions with the most (GiB):")
    for b, n in sorted(hi, reverse=True)[:8]:
        print(f"    {b / 2**30:7.3f}  {n[:100]}")
