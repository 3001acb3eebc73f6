#!/usr/bin/env python3
"""What the measured slab rates allow at a tile mix f: the prefill f = 0.9 target against its bound, per case.

A hybrid weight's GEMM is a mix: a fraction f of its slabs are 2:4, the rest dense. If the 2:4 slabs run at r1 times
cuBLAS's speed (the kernel at f = 1) and the dense ones at r0 (the kernel at f = 0), the mix cannot beat
1 / (f / r1 + (1 - f) / r0), whatever the schedule. This tool takes those rates from bench_ops CSVs (rows
`rr-…` of the head-to-head rounds where present, else the single columns), and per shape and M prints:
- the mix kernel (v8) × cuBLAS and the fraction of its own bound it reaches;
- the bound with the dense slabs at cuBLAS's speed (r0 = 1), and with cuSPARSELt's 2:4 rate in place of ours;
- how fast the 2:4 slabs would have to be for `--target` (1.4) at the measured r0, and at r0 = 1,
  as a factor over the measured r1.
Speedups are against the cuBLAS row of the same block (rr-cublas for rr rows), so each rate is a same-run ratio.
Usage: python3 tools/prefill_bound.py --mix A.csv --sparse B.csv --dense C.csv [--target 1.4] [--json out.json]
(--sparse and --dense default to --mix). Standard library only; the JSON carries the git hash and the inputs'
sha256.
"""
import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import tempfile


def load(path):
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as e:
        sys.exit(f"prefill_bound: {path}: {e.strerror}")
    need = {"N", "K", "M", "kernel", "f", "speedup_vs_cublas"}
    if not rows or not need <= set(rows[0]):
        sys.exit(f"prefill_bound: {path}: not a bench_ops CSV (want columns {', '.join(sorted(need))})")
    out = {}
    for r in rows:
        try:
            key = (int(r["N"]), int(r["K"]), int(r["M"]), r["kernel"])
            out.setdefault(key, []).append((float(r["f"]), float(r["speedup_vs_cublas"])))
        except ValueError:
            sys.exit(f"prefill_bound: {path}: bad number in row {r}")
    return out


def rate(table, n, k, m, kernels, f):
    """The first of `kernels` measured at tile mix f (within 0.02) for this case: (f, speedup, kernel)."""
    for kern in kernels:
        for ff, sp in table.get((n, k, m, kern), []):
            if abs(ff - f) < 0.02 and sp > 0:
                return ff, sp, kern
    return None


def sha256(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def git_hash():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mix", required=True, help="CSV with the mix kernel's rows (f = --f)")
    ap.add_argument("--sparse", help="CSV with the f = 1 rows (default: --mix)")
    ap.add_argument("--dense", help="CSV with the f = 0 rows (default: --mix)")
    ap.add_argument("--f", type=float, default=0.9, help="the mix's tile fraction (rows within 0.02)")
    ap.add_argument("--target", type=float, default=1.4)
    ap.add_argument("--json", help="also write the table here (atomically)")
    a = ap.parse_args()
    if not 0 < a.f < 1 or a.target <= 0:
        sys.exit("prefill_bound: --f must be in (0, 1) and --target positive")
    paths = {"mix": a.mix, "sparse": a.sparse or a.mix, "dense": a.dense or a.mix}
    tabs = {k: load(p) for k, p in paths.items()}
    cases = sorted({(n, k, m) for (n, k, m, kern) in tabs["mix"] if kern.endswith("hybrid-v8")})
    rows = []
    for n, k, m in cases:
        mix = rate(tabs["mix"], n, k, m, ["rr-hybrid-v8", "hybrid-v8"], a.f)
        r1 = rate(tabs["sparse"], n, k, m, ["rr-hybrid-v7", "hybrid-v7"], 1.0)
        rc = rate(tabs["sparse"], n, k, m, ["rr-cusparselt", "cusparselt"], 1.0)
        r0 = rate(tabs["dense"], n, k, m, ["rr-hybrid-v8", "hybrid-v8"], 0.0)
        if not (mix and r1 and r0):
            print(f"prefill_bound: {n}x{k} M={m}: a rate is missing (mix {bool(mix)}, f = 1 {bool(r1)}, "
                  f"f = 0 {bool(r0)}); skipped", file=sys.stderr)
            continue
        f, v8 = mix[0], mix[1]
        bound = lambda s, d: 1.0 / (f / s + (1.0 - f) / d)
        need = lambda d: (f / (1.0 / a.target - (1.0 - f) / d)) if 1.0 / a.target > (1.0 - f) / d else float("inf")
        row = {"N": n, "K": k, "M": m, "f": f, "v8": v8, "r1": r1[1], "r0": r0[1],
               "r1_kernel": r1[2], "r0_kernel": r0[2], "mix_kernel": mix[2],
               "bound": bound(r1[1], r0[1]), "bound_r0_1": bound(r1[1], 1.0),
               "bound_cusparselt": bound(rc[1], r0[1]) if rc else None, "rc": rc[1] if rc else None,
               "r1_needed": need(r0[1]), "r1_needed_r0_1": need(1.0)}
        row["fraction_of_bound"] = v8 / row["bound"]
        rows.append(row)
    if not rows:
        sys.exit("prefill_bound: no case has all three rates")
    print(f"| N×K | M | v8 × cuBLAS | r1 (f = 1) | cuSPARSELt (f = 1) | r0 (f = 0) | bound | v8 / bound "
          f"| bound, r0 = 1 | 2:4 rate for {a.target}: at r0 / at r0 = 1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda x: "–" if x is None else f"{x:.3f}"
        print(f"| {r['N']}×{r['K']} | {r['M']} | {r['v8']:.3f} | {r['r1']:.3f} | {fmt(r['rc'])} | {r['r0']:.3f} "
              f"| {r['bound']:.3f} | {r['fraction_of_bound']:.3f} | {r['bound_r0_1']:.3f} "
              f"| {r['r1_needed']:.3f} (×{r['r1_needed'] / r['r1']:.3f}) / {r['r1_needed_r0_1']:.3f} "
              f"(×{r['r1_needed_r0_1'] / r['r1']:.3f}) |")
    below = [r for r in rows if r["bound"] < a.target]
    print(f"\n{len(rows)} cases; v8 / bound median {sorted(r['fraction_of_bound'] for r in rows)[len(rows) // 2]:.3f}; "
          f"bound below {a.target}: {len(below)} "
          + "(" + ", ".join(f"{r['N']}×{r['K']} M={r['M']} {r['bound']:.3f}" for r in below) + ")")
    if a.json:
        doc = {"tool": "tools/prefill_bound.py", "git": git_hash(), "target": a.target, "f": a.f,
               "inputs": {k: {"path": p, "sha256": sha256(p)} for k, p in paths.items()}, "rows": rows}
        d = os.path.dirname(os.path.abspath(a.json))
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1, default=lambda x: None)
        os.replace(tmp, a.json)


if __name__ == "__main__":
    main()
