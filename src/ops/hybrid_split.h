// Work schedules of the hybrid kernels, written once for the host and the device so that the CPU tests check them.
// The split-K decode kernel's k-split (host only): a launch has RB row blocks ×
// nchunks token chunks × S k-splits of KPC k-tiles each (KPC a multiple of KB; the last split may hold fewer), and
// needs RB·nchunks·S ≤ max_slots partial-sum slots unless S = 1 (workspace reduction). With the cluster reduction the
// S splits of a row block are one thread-block cluster, so S ≤ 8 and the resident CTAs depend on S.
#pragma once
#include <algorithm>
#include <cstdint>

#ifdef __CUDACC__
#define PATCHLLM_HD __host__ __device__
#else
#define PATCHLLM_HD
#endif

namespace patchllm {

// The wgmma tile kernel's grouped raster: CTA bid of units × TB (units: row blocks; TB token blocks) → (unit, token
// block). Groups of `group` consecutive units, token blocks slowest inside a
// group, so the ~132 CTAs resident at once share ~group weight units and a few x blocks (both L2-resident) instead of
// streaming every weight unit from HBM once per token block. A bijection of [0, units · TB) (tested).
struct RasterPos {
  int unit, tb;
};
PATCHLLM_HD inline RasterPos grouped_raster(int bid, int units, int TB, int group) {
  const int first = bid / (group * TB) * group, left = units - first, gsize = left < group ? left : group;
  const int local = bid - first * TB;
  return {first + local % gsize, local / gsize};
}

// v8's stream-K tail (hybrid_prefill_sorted_kernel, session 37). G clusters over `units` units of
// nslab slabs each: where units is not a multiple of G, the last wave would leave clusters idle (128 units on 66
// clusters: 4 clusters run one unit, the rest two). So only whole waves but the last run as whole units (cluster c:
// c, c + G, ...), and the last G + units % G units are cut into equal shares of work, one contiguous share per
// cluster, between one and two units each. A share's ends cut at most two units, each into a head (the walk's
// first slabs) and a tail; the cluster that ends in a unit takes its head and finishes it, the next cluster starts
// with its tail, writes its partial sums to the workspace, and flags them. The tail comes first in its cluster's
// share and the head last in the other's, so the finisher rarely waits. A unit's work is cut in proportion to its
// slabs' cost: an all-2:4 slab (section A) 1, any other 2 (a dense tile in the pair sets the pace), so a unit's
// share of the cut is its share of the time whatever its tile mix.
// Whole units walk section A first in even items and B first in odd ones (one change of ring per unit); the tail's
// units by their index in the tail, so both pieces of a cut unit walk in the same order.
constexpr int PREFILL_TAIL_QUANTA = 4096;  // a unit's work, in the tail's fixed-point position
struct PrefillItem {
  int unit = 0;       // in [0, units)
  int t0 = 0, t1 = 0; // the piece: quanta [t0, t1) of PREFILL_TAIL_QUANTA (whole unit: 0, PREFILL_TAIL_QUANTA)
  bool a_first = true;
};
// Whether the tail is cut: only where the last wave is partial and there is more than one wave (and G < 512, so
// that the positions below fit 32 bits: G · 2G · 4096 < 2^31).
PATCHLLM_HD inline bool prefill_tail_cut(int units, int G) {
  return G > 1 && G < 512 && units > G && units % G != 0;
}
// Item j of cluster cid (of G); false past its last one. (32-bit arithmetic: the kernel's producer thread has 40
// registers.)
PATCHLLM_HD inline bool prefill_item(int j, int cid, int G, int units, bool cut, PrefillItem& it) {
  const int whole = cut ? units / G - 1 : j + 1;  // whole units before the tail (uncut: all of them)
  if (j < whole) {
    it.unit = cid + j * G, it.t0 = 0, it.t1 = PREFILL_TAIL_QUANTA, it.a_first = (j & 1) == 0;
    return it.unit < units;
  }
  const int n = G + units % G, first = units - n, R = PREFILL_TAIL_QUANTA;
  const int s0 = cid * n * R / G, s1 = (cid + 1) * n * R / G;
  const int v = s0 / R + (j - whole);  // unit in the tail
  if (v * R >= s1) return false;
  it.unit = first + v;
  it.t0 = v == s0 / R ? s0 % R : 0;
  it.t1 = v == s1 / R ? s1 % R : R;
  it.a_first = (v & 1) == 0;
  return true;
}
// The walk position (slabs, 0 .. nslab) that quanta t of a unit cuts at: the unit's cost (na all-2:4 slabs at 1,
// nslab - na at 2) in its walk order, rounded to a slab. Both clusters of a cut compute it from the same t.
PATCHLLM_HD inline int prefill_walk_cut(int t, int na, int nslab, bool a_first) {
  if (t <= 0) return 0;
  if (t >= PREFILL_TAIL_QUANTA) return nslab;
  const int nb = nslab - na;
  const int x = int((int64_t(t) * (na + 2 * nb) + PREFILL_TAIL_QUANTA / 2) / PREFILL_TAIL_QUANTA);
  const int first = a_first ? na : 2 * nb;  // the first section's cost
  if (x <= first) return a_first ? x : (x + 1) / 2;
  return a_first ? na + (x - first + 1) / 2 : nb + (x - first);
}

// Section `half` (0: the walk's first) of the walk positions [p0, p1): whether it is section A, and its slabs
// [i0, i1) of the order row (A: 0 .. na - 1, B: na .. nslab - 1); false where [p0, p1) has none of it.
PATCHLLM_HD inline bool prefill_section(bool a_first, int half, int na, int nslab, int p0, int p1, bool& sa, int& i0,
                                        int& i1) {
  sa = (half == 0) == a_first;
  const int len0 = a_first ? na : nslab - na;
  const int w0 = half == 0 ? 0 : len0, w1 = half == 0 ? len0 : nslab;
  const int lo = p0 > w0 ? p0 : w0, hi = p1 < w1 ? p1 : w1;
  if (lo >= hi) return false;
  const int base = sa ? 0 : na;
  i0 = base + lo - w0, i1 = base + hi - w0;
  return true;
}

struct DecodeSplit {
  int S = 1, KPC = 1;
  int64_t cost = 0;  // waves rules: waves · (kpc + 1), in k-tile times
};

// Fixed target: about `target` CTAs (decode_ctas_per_sm × SMs).
inline DecodeSplit decode_split(int64_t RB, int64_t CT, int64_t nchunks, int KB, int64_t target, int64_t max_slots) {
  DecodeSplit d;
  const int64_t base = RB * nchunks;
  int64_t S = std::max<int64_t>(1, (target + base - 1) / base);
  S = std::min<int64_t>(S, (CT + KB - 1) / KB);
  int64_t kpc = (CT + S - 1) / S;
  kpc = (kpc + KB - 1) / KB * KB;
  S = (CT + kpc - 1) / kpc;
  while (S > 1 && base * S > max_slots) {  // explicit kernel=2 with many chunks: fewer splits
    kpc += KB;
    S = (CT + kpc - 1) / kpc;
  }
  d.S = int(S);
  d.KPC = int(kpc);
  return d;
}

// Auto k-split (decode_ctas_per_sm = 0). CTAs of one launch all take kpc k-tiles (the last split may hold fewer) and
// run in waves of `slots` resident CTAs, so a launch costs about waves · (kpc + 1): the +1 is a CTA's fixed part (its
// prologue, the partial-sum store and the counter), about one k-tile's time. The cost is minimised over every kpc,
// fewer CTAs on ties. Against the fixed target of 4 CTAs per SM it used before, on the H200 over the 8 decode shapes
// at M = 1 and 16, f = 0 and 0.9: 0.97–1.25× the speed, geometric mean 1.06× (docs/BENCHMARKS.md §4).
// slots_of(S): resident CTAs when the launch has S splits (> 0; ≤ 0 = S not launchable); splits above max_s are not
// considered (S = 1 always is).
template <typename SlotsOf>
inline DecodeSplit decode_split_waves_by(int64_t RB, int64_t CT, int64_t nchunks, int KB, SlotsOf slots_of,
                                         int64_t max_s, int64_t max_slots) {
  DecodeSplit best;
  int64_t best_ctas = 0;
  bool found = false;
  for (int64_t kpc = KB;; kpc += KB) {
    const int64_t S = (CT + kpc - 1) / kpc, ctas = RB * nchunks * S;
    const bool allowed = S <= max_s && ctas <= max_slots;
    const int64_t slots = S == 1 ? std::max<int64_t>(1, slots_of(1)) : allowed ? slots_of(S) : 0;
    if (slots > 0) {
      const int64_t cost = (ctas + slots - 1) / slots * (kpc + 1);
      if (!found || cost < best.cost || (cost == best.cost && ctas < best_ctas)) {
        found = true;
        best_ctas = ctas;
        best.S = int(S), best.KPC = int(kpc), best.cost = cost;
      }
    }
    if (S == 1) break;
  }
  return best;
}
inline DecodeSplit decode_split_waves(int64_t RB, int64_t CT, int64_t nchunks, int KB, int64_t slots,
                                      int64_t max_slots) {
  return decode_split_waves_by(
      RB, CT, nchunks, KB, [slots](int64_t) { return slots; }, CT, max_slots);
}

// The launcher's choice for one launch: the k-split, and whether its S CTAs per row block sum their partials through
// a thread-block cluster (v3g) instead of the workspace. fixed_target > 0 (decode_ctas_per_sm · SMs): decode_split to
// about that many CTAs, through a cluster when allowed and cluster_slots(S) > 0. Else by waves: the workspace split
// on `slots` resident CTAs and, when clusters are allowed, the cluster split (S ≤ max_cluster, resident CTAs
// cluster_slots(S)); the cluster one when its modelled cost is no higher, since its reduction is the cheaper.
struct DecodePlan {
  DecodeSplit split;
  bool cluster = false;
};
template <typename ClusterSlots>
inline DecodePlan decode_plan(int64_t RB, int64_t CT, int64_t nchunks, int KB, int64_t slots, int64_t fixed_target,
                              bool cluster_ok, ClusterSlots cluster_slots, int64_t max_cluster, int64_t max_slots) {
  DecodePlan plan;
  if (fixed_target > 0) {
    plan.split = decode_split(RB, CT, nchunks, KB, fixed_target, max_slots);
    plan.cluster = cluster_ok && plan.split.S > 1 && plan.split.S <= max_cluster && cluster_slots(plan.split.S) > 0;
    return plan;
  }
  plan.split = decode_split_waves(RB, CT, nchunks, KB, slots, max_slots);
  if (!cluster_ok) return plan;
  const DecodeSplit cs = decode_split_waves_by(
      RB, CT, nchunks, KB, [&](int64_t S) { return S == 1 ? slots : cluster_slots(S); }, max_cluster, INT64_MAX);
  if (cs.cost <= plan.split.cost) plan = {cs, cs.S > 1};
  return plan;
}

// Auto choice at 9..16 tokens (one chunk, two n-tiles) between the k-split and v3h's row split over 2 CTAs of 4 warps
// per row block (no k-split, no reduction). Fewer CTAs than SMs leave SMs idle, so the row split needs sms ≤ 2·RB.
// Its upper bound depends on the k-split's reduction:
// - workspace reduction (no clusters: sm_8x, or HybridKernelOptions::workspace_reduction): 2·RB < 3·sms. H100,
//   M = 16, v3h × the k-split (session 15): 12288×4096 (192 CTAs) 1.10 / 1.03 at f = 0 / 0.9, 14336×4096 (224)
//   1.03 / 1.02, 22016×4096 (344) 1.01; 4096 and 6144 rows (64, 96 CTAs) 0.6–0.8, 28672 rows (448) 1.00 / 0.98.
// - cluster reduction (Hopper, the default since session 19): 2·RB < 1.5·sms. The cluster k-split beats v3h from
//   1.7 CTAs per SM on. H100, M = 16, v3h × the cluster k-split, sessions 16 / 19 (docs/benchmarks/data/
//   decode_auto_h100.csv, decode_cluster_auto_h100.csv, `hybrid-pdl` against `hybrid-pdl-cl`): 12288×4096 (1.45 per
//   SM) 1.08 / 1.09 at f = 0, 1.01 / 1.02 at f = 0.9, 1.14 / 1.15 at f = 1; 14336×4096 (1.70) 0.98 / 0.97,
//   0.95 / 0.95, 0.94 / 0.95 and 0.93 / 0.94 at f = 0, 0.5, 0.9, 1; 22016×4096 (2.6) 0.99–1.02.
inline bool decode_row_split_auto(int64_t RB, int64_t sms, bool cluster_reduction) {
  return sms <= 2 * RB && (cluster_reduction ? 4 * RB < 3 * sms : 2 * RB < 3 * sms);
}

// Auto choice at 9..16 tokens where the k-split runs: its 8-warp CTAs with two load batches in flight per warp
// (hybrid_decode.cuh v3i, W = 8: one CTA per SM by registers) instead of v3e's one batch (two CTAs per SM), when the
// pipelined plan's `ctas` all fit in one wave of `resident` CTAs and fill at least 90% of the SMs. Why: both forms
// have 16 load batches in flight per SM; the pipelined one keeps them in flight through the MMAs and the x waits,
// but a partial second wave or idle SMs cost it more than it gains. Measured in session 24 (M = 16, × cuBLAS with
// PDL, pipelined / v3e, docs/benchmarks/data/decode_v3i_db_h100.csv and ..._h200.csv): N = 4096 row blocks (32; 128
// CTAs of K / 4 each) H100 f = 0.9 4096×4096 1.66 / 1.59, 4096×11008 1.48 / 1.46, 4096×14336 1.50 / 1.48, f = 1
// +2…10%; H200 +1…6% except 4096×14336 at f = 0.9 (1.41 / 1.44). 6144×4096 (its plan: 384 CTAs, 2.9 waves)
// 1.12 / 1.57 and 28672×4096 (896 CTAs, 6.8 waves) 1.34 / 1.54 at f = 0.9 on the H100: the losses the bounds
// exclude. 14336×4096 (112 CTAs, 85% of the SMs) is left out too: +1…3% on the H100, −3…+2% on the H200.
inline bool decode_pipelined_k_split_auto(int64_t ctas, int64_t resident, int64_t sms) {
  return ctas <= resident && 10 * ctas >= 9 * sms;
}

}  // namespace patchllm
