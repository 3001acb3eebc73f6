// Packed hybrid dense / 2:4 weight format (docs/formats/packed-hybrid.md, format version 1).
// Header-only and free of LibTorch and CUDA, so the LibTorch front (hybrid_linear.cc), the CUDA kernels, the bench
// and dev/kernels all pack and read the same bytes.
//
// W: [N, K] 16-bit (bf16 or fp16, handled as raw uint16 bits), tiles tile_rows x tile_cols, row-block-major.
// Inside a tile: k64 slabs, then 16-row groups, then one "fragment unit" (16 rows x 64 K) in the per-thread register
// order of mma.sync m16n8k16 (dense) or mma.sp::ordered_metadata m16n8k32 (2:4); wgmma/wgmma.sp with A in registers
// use the same per-warp order.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace patchllm {

constexpr int HYBRID_FORMAT_VERSION = 1;
constexpr int HYBRID_GROUP_ROWS = 16;   // rows of one MMA A fragment
constexpr int HYBRID_SLAB_COLS = 64;    // K columns of one fragment unit (4 x k16 dense, 2 x k32 sparse)
constexpr int HYBRID_DENSE_UNIT_BYTES = 16 * 64 * 2;            // 2048: 32 lanes x 4 k16 steps x 16 B
constexpr int HYBRID_SPARSE_VALUE_BYTES = 16 * 32 * 2;          // 1024: 32 lanes x 2 k32 steps x 16 B
constexpr int HYBRID_SPARSE_UNIT_BYTES = HYBRID_SPARSE_VALUE_BYTES + 32 * 4;  // + 128 B metadata, 1 word per lane

enum HybridTileKind : uint8_t { HYBRID_TILE_DENSE = 0, HYBRID_TILE_SPARSE24 = 1 };

// ordered_metadata nibble of a 4-chunk: lower kept index in bits 1:0, higher in bits 3:2 (idx0 < idx1).
inline uint32_t hybrid_encode_nibble(int idx0, int idx1) { return uint32_t(idx0) | (uint32_t(idx1) << 2); }
inline void hybrid_decode_nibble(uint32_t nib, int* idx0, int* idx1) {
  *idx0 = int(nib & 3);
  *idx1 = int((nib >> 2) & 3);
}

inline int64_t hybrid_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t hybrid_tile_bytes(int tile_rows, int tile_cols, uint8_t kind) {
  int64_t units = int64_t(tile_rows / HYBRID_GROUP_ROWS) * (tile_cols / HYBRID_SLAB_COLS);
  return units * (kind == HYBRID_TILE_SPARSE24 ? HYBRID_SPARSE_UNIT_BYTES : HYBRID_DENSE_UNIT_BYTES);
}

// Geometry and index of a packed weight; the blob itself lives elsewhere (torch tensor or device buffer).
struct HybridLayout {
  int64_t rows = 0, cols = 0;         // N, K (logical)
  int tile_rows = 128, tile_cols = 128;
  int64_t row_blocks = 0, col_tiles = 0;
  std::vector<uint8_t> kinds;         // [row_blocks * col_tiles], row-block-major
  std::vector<int64_t> offsets;       // [row_blocks * col_tiles + 1] byte offset of each tile blob; last = total
};

// Empty string when the geometry is acceptable, else a one-line reason.
inline std::string hybrid_check_geometry(int64_t rows, int64_t cols, int tile_rows, int tile_cols) {
  if (rows <= 0 || cols <= 0) return "weight must have N > 0 and K > 0";
  if (tile_rows <= 0 || tile_rows % HYBRID_GROUP_ROWS != 0) return "tile_rows must be a positive multiple of 16";
  if (tile_cols <= 0 || tile_cols % HYBRID_SLAB_COLS != 0) return "tile_cols must be a positive multiple of 64";
  return "";
}

inline HybridLayout hybrid_layout_make(int64_t rows, int64_t cols, int tile_rows, int tile_cols,
                                       const uint8_t* tile_is_sparse) {
  HybridLayout L;
  L.rows = rows;
  L.cols = cols;
  L.tile_rows = tile_rows;
  L.tile_cols = tile_cols;
  L.row_blocks = hybrid_ceil_div(rows, tile_rows);
  L.col_tiles = hybrid_ceil_div(cols, tile_cols);
  int64_t T = L.row_blocks * L.col_tiles;
  L.kinds.resize(T);
  L.offsets.resize(T + 1);
  int64_t off = 0;
  for (int64_t t = 0; t < T; ++t) {
    L.kinds[t] = tile_is_sparse[t] ? HYBRID_TILE_SPARSE24 : HYBRID_TILE_DENSE;
    L.offsets[t] = off;
    off += hybrid_tile_bytes(tile_rows, tile_cols, L.kinds[t]);
  }
  L.offsets[T] = off;
  return L;
}

// Dense fragment unit: word (j*32 + lane)*4 + q holds row g + 8*(q&1), k = 16j + 2t + 8*(q>>1) + {0 (low), 1 (high)},
// lane = 4g + t. These are a0..a3 of mma.m16n8k16 for k16 step j.
inline void hybrid_dense_word_coords(int word, int* row, int* k) {
  int q = word & 3, lane = (word >> 2) & 31, j = word >> 7;
  *row = (lane >> 2) + 8 * (q & 1);
  *k = 16 * j + 2 * (lane & 3) + 8 * (q >> 1);
}
// Sparse fragment unit values: word (s*32 + lane)*4 + q holds the two kept values (lower index first) of row
// g + 8*(q&1), 4-chunk c = 8s + t + 4*(q>>1) of the 64-wide slab (mma.sp m16n8k32 a0..a7 for k32 step s).
inline void hybrid_sparse_word_coords(int word, int* row, int* chunk) {
  int q = word & 3, lane = (word >> 2) & 31, s = word >> 7;
  *row = (lane >> 2) + 8 * (q & 1);
  *chunk = 8 * s + (lane & 3) + 4 * (q >> 1);
}
// Sparse metadata word of lane 4g + t: nibble i (bits 4i..4i+3) = row g, chunk 4t + i; nibble 4 + i = row g + 8,
// chunk 4t + i. With sparsity selector s, lanes t = 2s, 2s+1 of each quad feed k32 step s (one word, two MMAs).
inline void hybrid_meta_nibble_coords(int lane, int nibble, int* row, int* chunk) {
  *row = (lane >> 2) + 8 * (nibble >> 2);
  *chunk = 4 * (lane & 3) + (nibble & 3);
}

// Packs one tile. w, keep: row-major [rows, cols] (keep may be null for dense tiles). Out-of-range rows/cols are
// zero padding (metadata 0b0100 for wholly padded chunks). Returns "" or a one-line error for a bad 2:4 chunk.
inline std::string hybrid_pack_tile(const uint16_t* w, const uint8_t* keep, int64_t rows, int64_t cols,
                                    int64_t r0, int64_t c0, int tile_rows, int tile_cols, uint8_t kind,
                                    uint8_t* out) {
  const int slabs = tile_cols / HYBRID_SLAB_COLS, groups = tile_rows / HYBRID_GROUP_ROWS;
  auto at = [&](int64_t r, int64_t c) -> uint16_t { return (r < rows && c < cols) ? w[r * cols + c] : uint16_t(0); };
  for (int h = 0; h < slabs; ++h) {
    for (int gr = 0; gr < groups; ++gr) {
      const int64_t rb = r0 + int64_t(gr) * HYBRID_GROUP_ROWS, kb = c0 + int64_t(h) * HYBRID_SLAB_COLS;
      if (kind == HYBRID_TILE_DENSE) {
        uint32_t* u = reinterpret_cast<uint32_t*>(out);
        for (int word = 0; word < HYBRID_DENSE_UNIT_BYTES / 4; ++word) {
          int r, k;
          hybrid_dense_word_coords(word, &r, &k);
          u[word] = uint32_t(at(rb + r, kb + k)) | (uint32_t(at(rb + r, kb + k + 1)) << 16);
        }
        out += HYBRID_DENSE_UNIT_BYTES;
        continue;
      }
      // 2:4: pick the two kept positions of every (row, chunk) from the mask, never from zeros in w.
      int idx[16][16][2];
      for (int r = 0; r < 16; ++r) {
        for (int c = 0; c < 16; ++c) {
          const int64_t gr_ = rb + r, gk = kb + 4 * c;
          int n = 0, valid = 0;
          for (int e = 0; e < 4; ++e) {
            if (gr_ < rows && gk + e < cols) {
              ++valid;
              if (keep[gr_ * cols + gk + e]) {
                if (n == 2) return "2:4 tile has more than 2 kept of 4 at row " + std::to_string(gr_) + ", col " +
                                   std::to_string(gk);
                idx[r][c][n++] = e;
              }
            }
          }
          if (valid == 4 && n != 2)
            return "2:4 tile needs exactly 2 kept of 4 at row " + std::to_string(gr_) + ", col " + std::to_string(gk);
          // Ragged or padded chunk: fill with unkept positions, whose stored value is 0.
          for (int e = 0; e < 4 && n < 2; ++e)
            if (!(n == 1 && idx[r][c][0] == e)) idx[r][c][n++] = e;
          if (idx[r][c][0] > idx[r][c][1]) std::swap(idx[r][c][0], idx[r][c][1]);
        }
      }
      uint32_t* u = reinterpret_cast<uint32_t*>(out);
      for (int word = 0; word < HYBRID_SPARSE_VALUE_BYTES / 4; ++word) {
        int r, c;
        hybrid_sparse_word_coords(word, &r, &c);
        const int64_t gr_ = rb + r, gk = kb + 4 * c;
        auto val = [&](int e) -> uint16_t {
          return (gr_ < rows && gk + e < cols && keep[gr_ * cols + gk + e]) ? w[gr_ * cols + gk + e] : uint16_t(0);
        };
        u[word] = uint32_t(val(idx[r][c][0])) | (uint32_t(val(idx[r][c][1])) << 16);
      }
      uint32_t* meta = u + HYBRID_SPARSE_VALUE_BYTES / 4;
      for (int lane = 0; lane < 32; ++lane) {
        uint32_t m = 0;
        for (int nib = 0; nib < 8; ++nib) {
          int r, c;
          hybrid_meta_nibble_coords(lane, nib, &r, &c);
          m |= hybrid_encode_nibble(idx[r][c][0], idx[r][c][1]) << (4 * nib);
        }
        meta[lane] = m;
      }
      out += HYBRID_SPARSE_UNIT_BYTES;
    }
  }
  return "";
}

// Packs a whole weight into blob (size L.offsets.back()), or row blocks [rb0, rb1) of it when given (every tile
// writes its own blob range, so disjoint ranges may run in parallel). Returns "" or a one-line error.
inline std::string hybrid_pack_raw(const uint16_t* w, const uint8_t* keep, const HybridLayout& L, uint8_t* blob,
                                   int64_t rb0 = 0, int64_t rb1 = -1) {
  if (rb1 < 0) rb1 = L.row_blocks;
  for (int64_t rb = rb0; rb < rb1; ++rb)
    for (int64_t ct = 0; ct < L.col_tiles; ++ct) {
      int64_t t = rb * L.col_tiles + ct;
      std::string err = hybrid_pack_tile(w, keep, L.rows, L.cols, rb * L.tile_rows, ct * L.tile_cols, L.tile_rows,
                                         L.tile_cols, L.kinds[t], blob + L.offsets[t]);
      if (!err.empty()) return err;
    }
  return "";
}

// Unpacks into a dense row-major [rows, cols] buffer (pruned 2:4 positions become exact +0).
inline void hybrid_unpack_raw(const uint8_t* blob, const HybridLayout& L, uint16_t* w) {
  std::memset(w, 0, size_t(L.rows * L.cols) * 2);
  const int slabs = L.tile_cols / HYBRID_SLAB_COLS, groups = L.tile_rows / HYBRID_GROUP_ROWS;
  auto put = [&](int64_t r, int64_t c, uint16_t v) {
    if (r < L.rows && c < L.cols) w[r * L.cols + c] = v;
  };
  for (int64_t rb = 0; rb < L.row_blocks; ++rb)
    for (int64_t ct = 0; ct < L.col_tiles; ++ct) {
      int64_t t = rb * L.col_tiles + ct;
      const uint8_t* p = blob + L.offsets[t];
      for (int h = 0; h < slabs; ++h)
        for (int gr = 0; gr < groups; ++gr) {
          const int64_t r0 = rb * L.tile_rows + int64_t(gr) * 16, k0 = ct * L.tile_cols + int64_t(h) * 64;
          const uint32_t* u = reinterpret_cast<const uint32_t*>(p);
          if (L.kinds[t] == HYBRID_TILE_DENSE) {
            for (int word = 0; word < HYBRID_DENSE_UNIT_BYTES / 4; ++word) {
              int r, k;
              hybrid_dense_word_coords(word, &r, &k);
              put(r0 + r, k0 + k, uint16_t(u[word] & 0xffff));
              put(r0 + r, k0 + k + 1, uint16_t(u[word] >> 16));
            }
            p += HYBRID_DENSE_UNIT_BYTES;
          } else {
            const uint32_t* meta = u + HYBRID_SPARSE_VALUE_BYTES / 4;
            int idx[16][16][2];
            for (int lane = 0; lane < 32; ++lane)
              for (int nib = 0; nib < 8; ++nib) {
                int r, c;
                hybrid_meta_nibble_coords(lane, nib, &r, &c);
                hybrid_decode_nibble((meta[lane] >> (4 * nib)) & 0xf, &idx[r][c][0], &idx[r][c][1]);
              }
            for (int word = 0; word < HYBRID_SPARSE_VALUE_BYTES / 4; ++word) {
              int r, c;
              hybrid_sparse_word_coords(word, &r, &c);
              put(r0 + r, k0 + 4 * c + idx[r][c][0], uint16_t(u[word] & 0xffff));
              put(r0 + r, k0 + 4 * c + idx[r][c][1], uint16_t(u[word] >> 16));
            }
            p += HYBRID_SPARSE_UNIT_BYTES;
          }
        }
    }
}

// ---- prefill image (session 28): the same tiles with each 64-K slab in the wgmma-descriptor (SS) order ----
// Why: the prefill kernel v7 reads the weight as the wgmma A operand straight from shared memory by descriptor; the
// v1 blob's register order only feeds the RS form, which gained 0.92–1.09× where the SS form gained 1.10–1.27× over
// v4d (docs/benchmarks/kernels.md, "Session 28"). The image has the blob's size, kinds and offsets; only the bytes
// inside each slab move (a permutation of 32-bit words), so it is built from the blob alone, metadata included.
// Slab of a dense tile (16 KB): 128 rows × 64 K, row r at byte 128 r, its 16-byte chunk i (8 values) at chunk
//   i ^ (r mod 8): the 128-byte swizzle of the TMA and of wgmma's K-major descriptors.
// Slab of a 2:4 tile (9 KB): 128 rows × 32 kept values (each 4-group's two in ascending order, as v1 keeps them), row r
//   at byte 64 r, chunk i at i ^ ((r / 2) mod 4) (the 64-byte swizzle), then the slab's 8 metadata words per lane of
//   v1 (group g's 128 bytes at 8192 + 128 g), which wgmma.sp takes from a register as mma.sp does.
inline int64_t hybrid_image_dense_byte(int r, int k) {
  return int64_t(r) * 128 + ((((k * 2) >> 4) ^ (r & 7)) << 4) + ((k * 2) & 15);
}
inline int64_t hybrid_image_sparse_byte(int r, int q) {  // q: compressed column 0..31
  return int64_t(r) * 64 + ((((q * 2) >> 4) ^ ((r >> 1) & 3)) << 4) + ((q * 2) & 15);
}
constexpr int HYBRID_IMAGE_META_OFFSET = 128 * 32 * 2;  // 8192: after a 2:4 slab's values

// Writes the image of blob (same size, L.offsets.back() bytes) into image. Needs 128 × 128 tiles.
inline void hybrid_prefill_image_raw(const uint8_t* blob, const HybridLayout& L, uint8_t* image) {
  const int slabs = L.tile_cols / HYBRID_SLAB_COLS, groups = L.tile_rows / HYBRID_GROUP_ROWS;
  for (int64_t t = 0; t < int64_t(L.kinds.size()); ++t) {
    const bool sparse = L.kinds[t] == HYBRID_TILE_SPARSE24;
    const int unit = sparse ? HYBRID_SPARSE_UNIT_BYTES : HYBRID_DENSE_UNIT_BYTES;
    for (int h = 0; h < slabs; ++h) {
      const int64_t slab = L.offsets[t] + int64_t(h) * groups * unit;
      for (int gr = 0; gr < groups; ++gr) {
        const uint8_t* u = blob + slab + int64_t(gr) * unit;
        uint8_t* o = image + slab;
        if (!sparse) {
          for (int word = 0; word < HYBRID_DENSE_UNIT_BYTES / 4; ++word) {
            int r, k;
            hybrid_dense_word_coords(word, &r, &k);
            std::memcpy(o + hybrid_image_dense_byte(16 * gr + r, k), u + 4 * word, 4);
          }
          continue;
        }
        for (int word = 0; word < HYBRID_SPARSE_VALUE_BYTES / 4; ++word) {
          int r, c;
          hybrid_sparse_word_coords(word, &r, &c);
          std::memcpy(o + hybrid_image_sparse_byte(16 * gr + r, 2 * c), u + 4 * word, 4);
        }
        std::memcpy(o + HYBRID_IMAGE_META_OFFSET + 128 * gr, u + HYBRID_SPARSE_VALUE_BYTES, 128);
      }
    }
  }
}

// ---- prefill order (session 31): each row-block pair's 64-K slabs in the order the prefill kernel v8 runs them --
// v8 (hybrid_prefill.cuh) runs a pair of row-blocks as one unit, both CTAs of a 2-CTA cluster on the same x slab:
// first the slabs where both tiles are 2:4 (section A, in K order), then the rest (section B): (2:4, dense) and
// (dense, 2:4) slabs alternating, then (dense, dense). Per pair, stride hybrid_prefill_order_stride words:
// - word 0: the number of section A slabs;
// - words 1, 2: the row blocks the cluster's CTAs of rank 0 and 1 run (session 34). The pairs are not (2g, 2g + 1):
//   row blocks are sorted by their dense slabs and paired in that order, because both CTAs keep in step through x,
//   so a pair takes as long as its heavier row block. With tiles placed at random at f = 0.9 and K = 4096 that
//   costs ~2% against the mean (tools/prefill_pairing_model.py), and sorting takes it to ~0.2%. Where the row-block
//   count is odd, the heaviest row block is paired with a pad (word 2 = the row-block count: that CTA runs its
//   partner's slabs and stores nothing);
// - then every slab (slabs past K skipped) as slab index | 2:4 bit of word 1's row block << 30 | of word 2's
//   << 31 (the pad takes its partner's bits).
// plain_pairs: pairs (2g, 2g + 1) as before session 34, kept to measure the pairing against (bench_ops).
// Needs 128 × 128 tiles; built from the kinds alone.
constexpr int64_t HYBRID_PREFILL_ORDER_HEAD = 3;
inline int64_t hybrid_prefill_order_stride(const HybridLayout& L) {
  return (L.cols + 63) / 64 + HYBRID_PREFILL_ORDER_HEAD;
}
inline int64_t hybrid_prefill_order_words(const HybridLayout& L) {
  return (L.row_blocks + 1) / 2 * hybrid_prefill_order_stride(L);
}
inline void hybrid_prefill_order_raw(const HybridLayout& L, uint32_t* out, bool plain_pairs = false) {
  const int64_t nslab = (L.cols + 63) / 64, CT = L.col_tiles, RB = L.row_blocks;
  const int64_t stride = nslab + HYBRID_PREFILL_ORDER_HEAD;
  auto sparse = [&](int64_t rb, int64_t t) { return L.kinds[rb * CT + t] == HYBRID_TILE_SPARSE24; };
  auto slabs = [&](int64_t t) { return std::min(2 * t + 2, nslab) - 2 * t; };  // (the last tile may have one)
  std::vector<int64_t> rbs(size_t(RB), 0), dense(size_t(RB), 0);
  for (int64_t rb = 0; rb < RB; ++rb) {
    rbs[size_t(rb)] = rb;
    for (int64_t t = 0; t < CT; ++t) dense[size_t(rb)] += sparse(rb, t) ? 0 : slabs(t);
  }
  if (!plain_pairs)  // lightest first; ties keep row-block order, so an all-2:4 or all-dense weight pairs as before
    std::stable_sort(rbs.begin(), rbs.end(), [&](int64_t a, int64_t b) { return dense[size_t(a)] < dense[size_t(b)]; });
  std::vector<int64_t> both, first, second, none;  // tiles: 2:4 in both, only in the first, only in the second, neither
  for (int64_t g = 0; g < (RB + 1) / 2; ++g) {
    const bool pad = 2 * g + 1 == RB;
    const int64_t r0 = rbs[size_t(2 * g)], r1 = pad ? r0 : rbs[size_t(2 * g + 1)];
    both.clear(), first.clear(), second.clear(), none.clear();
    for (int64_t t = 0; t < CT; ++t) {
      const bool s0 = sparse(r0, t), s1 = sparse(r1, t);
      (s0 && s1 ? both : s0 ? first : s1 ? second : none).push_back(t);
    }
    uint32_t* o = out + g * stride;
    o[1] = uint32_t(r0);
    o[2] = uint32_t(pad ? RB : r1);
    int64_t n = 0;
    auto put = [&](int64_t t) {
      const uint32_t bits = (uint32_t(sparse(r0, t)) << 30) | (uint32_t(sparse(r1, t)) << 31);
      for (int64_t s = 2 * t; s < 2 * t + slabs(t); ++s) o[HYBRID_PREFILL_ORDER_HEAD + n++] = uint32_t(s) | bits;
    };
    for (int64_t t : both) put(t);
    o[0] = uint32_t(n);
    for (size_t i = 0; i < std::max(first.size(), second.size()); ++i) {
      if (i < first.size()) put(first[i]);
      if (i < second.size()) put(second[i]);
    }
    for (int64_t t : none) put(t);
  }
}

}  // namespace patchllm
