#!/usr/bin/env python3
"""Time model behind v8's pairing of row blocks and its unit schedule (sessions 34, 35; docs/benchmarks/kernels.md).

v8 runs two row blocks as one cluster unit; both CTAs read the same x slabs, so a unit takes as long as its heavier
row block. Model: a 2:4 slab costs 1, a dense slab DENSE (v7's f = 1 rate over its f = 0 rate, ~1.52 / 0.87);
tiles placed at random with a fraction f of 2:4 tiles over the whole weight.
- Pairing (default): per LLaMA shape, the pairs' cost over the mean row block's for the pairs (2g, 2g + 1) and for
  row blocks sorted by dense tiles, then paired.
- --schedule: the time until the last of 66 clusters is done, over the total work / 66, for v8's static schedule
  (cluster c runs units c, c + 66, ... in the grouped raster, pairs lightest first) and the dynamic one (each next
  unit to the first cluster free, heaviest pairs first; the kernel's version was measured slower in sessions 35-36
  and removed in session 37, so the order is modelled here only), at M = 2048 and 8192
  (256-token units, each unit's cost plus EPILOGUE slab-times); "waves" is the part of it that whole units cannot
  avoid (the unit count over a multiple of 66).
Usage: python3 tools/prefill_pairing_model.py [--f 0.9] [--trials 20] [--seed 0] [--schedule]. Standard library only.
"""
import argparse
import heapq
import random
import signal

SHAPES = [(4096, 4096), (12288, 4096), (22016, 4096), (4096, 11008), (6144, 4096), (28672, 4096), (4096, 14336)]
DENSE = 1.52 / 0.87
CLUSTERS = 66      # 2-CTA clusters resident on an H100 SXM (132 SMs)
GROUP = 8          # pairs per group of the static grouped raster (GROUP / CL_CTAS in the kernel)
CHUNK = 8          # token blocks per chunk of the heavy-first order (session 35's SoCfg::HEAVY_CHUNK)
EPILOGUE = 0.03    # per unit, in slab-times per K slab (a guess; it only dilutes the differences)


def grouped_raster(bid, units, tb, group):
    first = bid // (group * tb) * group
    gsize = min(units - first, group)
    local = bid - first * tb
    return first + local % gsize


def heavy_first_raster(j, units, tb, chunk):
    c0 = j // (chunk * units) * chunk
    w = min(chunk, tb - c0)
    return units - 1 - (j - c0 * units) // w


def pair_costs(rng, n, k, f, sort):
    rb, ct = (n + 127) // 128, (k + 127) // 128
    cost = lambda d: (ct - d) + DENSE * d  # a row block with d dense tiles
    dense = set(rng.sample(range(rb * ct), round((1 - f) * rb * ct)))
    d = [sum((r * ct + t) in dense for t in range(ct)) for r in range(rb)]
    mean = sum(cost(x) for x in d) / rb
    o = sorted(d) if sort else d
    o = o + ([o[-1]] if rb % 2 else [])  # the pad runs its partner's tiles
    return [cost(max(o[i], o[i + 1])) for i in range(0, len(o), 2)], mean, ct


def pairing(a, rng):
    print(f"| N×K | pairs (2g, 2g+1) / mean | sorted pairs / mean |  (f = {a.f}, {a.trials} masks, dense slab = "
          f"{DENSE:.2f}× a 2:4 slab)")
    for n, k in SHAPES:
        plain = srt = 0.0
        for _ in range(a.trials):
            state = rng.getstate()
            pc, mean, _ = pair_costs(rng, n, k, a.f, False)
            plain += sum(pc) / len(pc) / mean / a.trials
            rng.setstate(state)  # the same mask, sorted
            pc, mean, _ = pair_costs(rng, n, k, a.f, True)
            srt += sum(pc) / len(pc) / mean / a.trials
        print(f"| {n}×{k} | {plain:.4f} | {srt:.4f} |")


def schedule(a, rng):
    print(f"| N×K | M | units | waves | static | dynamic | static / dynamic |  (f = {a.f}, {a.trials} masks, "
          f"{CLUSTERS} clusters; last cluster done / (total work / {CLUSTERS}))")
    for n, k in SHAPES:
        for m in (2048, 8192):
            tb = (m + 255) // 256
            waves = st = dy = 0.0
            for _ in range(a.trials):
                pc, _, ct = pair_costs(rng, n, k, a.f, True)
                pc = [c + EPILOGUE * 2 * ct for c in pc]
                units = len(pc) * tb
                ideal = sum(pc) * tb / CLUSTERS
                load = [0.0] * CLUSTERS
                for u in range(units):
                    load[u % CLUSTERS] += pc[grouped_raster(u, len(pc), tb, GROUP)]
                st += max(load) / ideal / a.trials
                heap = [(0.0, c) for c in range(CLUSTERS)]
                for j in range(units):
                    t, c = heapq.heappop(heap)
                    heapq.heappush(heap, (t + pc[heavy_first_raster(j, len(pc), tb, CHUNK)], c))
                dy += max(t for t, _ in heap) / ideal / a.trials
                waves += -(-units // CLUSTERS) * CLUSTERS / units / a.trials
            print(f"| {n}×{k} | {m} | {len(pc) * tb} | {waves:.4f} | {st:.4f} | {dy:.4f} | {st / dy:.4f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f", type=float, default=0.9, help="fraction of 2:4 tiles")
    ap.add_argument("--trials", type=int, default=20, help="random masks per shape")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--schedule", action="store_true", help="the unit schedules instead of the pairing")
    a = ap.parse_args()
    if not 0 <= a.f <= 1 or a.trials < 1:
        ap.error("--f must be in [0, 1] and --trials >= 1")
    rng = random.Random(a.seed)
    (schedule if a.schedule else pairing)(a, rng)


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head
    main()
