#!/usr/bin/env python3
"""Time model behind v8's pairing of row blocks (session 34; docs/benchmarks/kernels.md, "Session 34").

v8 runs two row blocks as one cluster unit; both CTAs read the same x slabs, so a unit takes as long as its heavier
row block. Model: a 2:4 slab costs 1, a dense slab DENSE (v7's f = 1 rate over its f = 0 rate, ~1.52 / 0.87);
tiles placed at random with a fraction f of 2:4 tiles over the whole weight. Prints, per LLaMA shape, the pairs'
cost over the mean row block's for the pairs (2g, 2g + 1) and for row blocks sorted by dense tiles, then paired.
Usage: python3 tools/prefill_pairing_model.py [--f 0.9] [--trials 20] [--seed 0]. Standard library only.
"""
import argparse
import random
import signal

SHAPES = [(4096, 4096), (12288, 4096), (22016, 4096), (4096, 11008), (6144, 4096), (28672, 4096), (4096, 14336)]
DENSE = 1.52 / 0.87


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f", type=float, default=0.9, help="fraction of 2:4 tiles")
    ap.add_argument("--trials", type=int, default=20, help="random masks per shape")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not 0 <= a.f <= 1 or a.trials < 1:
        ap.error("--f must be in [0, 1] and --trials >= 1")
    rng = random.Random(a.seed)
    print(f"| N×K | pairs (2g, 2g+1) / mean | sorted pairs / mean |  (f = {a.f}, {a.trials} masks, dense slab = "
          f"{DENSE:.2f}× a 2:4 slab)")
    for n, k in SHAPES:
        rb, ct = (n + 127) // 128, (k + 127) // 128
        cost = lambda d: (ct - d) + DENSE * d  # a row block with d dense tiles
        plain = srt = 0.0
        for _ in range(a.trials):
            dense = set(rng.sample(range(rb * ct), round((1 - a.f) * rb * ct)))
            d = [sum((r * ct + t) in dense for t in range(ct)) for r in range(rb)]
            mean = sum(cost(x) for x in d) / rb
            for order, acc in ((d, "plain"), (sorted(d), "sorted")):
                o = order + ([order[-1]] if rb % 2 else [])  # the pad runs its partner's tiles
                pair = sum(cost(max(o[i], o[i + 1])) for i in range(0, len(o), 2)) / (len(o) // 2)
                if acc == "plain":
                    plain += pair / mean / a.trials
                else:
                    srt += pair / mean / a.trials
        print(f"| {n}×{k} | {plain:.4f} | {srt:.4f} |")


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    main()
