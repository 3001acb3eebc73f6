// Packed hybrid dense/2:4 format: round trips on ragged shapes and random tile mixes, hand-computed metadata
// nibbles and fragment order, the CPU reference against a float64 GEMM, and bad inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "core/error.h"
#include "ops/hybrid_linear.h"
#include "ops/hybrid_split.h"

using namespace patchllm;

namespace {

// Random 2:4 keep mask along K: each 4-chunk keeps 2 distinct positions; a ragged tail keeps up to 2.
torch::Tensor random_keep_mask(int64_t N, int64_t K, torch::Generator gen) {
  torch::Tensor keep = torch::zeros({N, K}, torch::kBool);
  auto scores = torch::rand({N, (K + 3) / 4 * 4}, gen);
  auto top = std::get<1>(scores.view({N, -1, 4}).topk(2, -1));  // [N, chunks, 2]
  auto full = torch::zeros({N, (K + 3) / 4, 4}, torch::kBool).scatter_(2, top, true).view({N, -1});
  keep.copy_(full.narrow(1, 0, K));
  return keep;
}

// Non-zero random weight: |w| in [0.5, 1.5) with random sign, so a lost value can never look like a pruned zero.
torch::Tensor random_weight(int64_t N, int64_t K, torch::ScalarType dt, torch::Generator gen) {
  auto mag = torch::rand({N, K}, gen) + 0.5;
  auto sign = torch::rand({N, K}, gen).lt(0.5).to(torch::kFloat32) * 2 - 1;
  return (mag * sign).to(dt);
}

// What unpack must give, computed without the packer: 2:4 tiles keep only mask positions.
torch::Tensor expected_dense(const torch::Tensor& w, const torch::Tensor& tmap, const torch::Tensor& keep, int R,
                             int C) {
  auto sp = tmap.to(torch::kBool).repeat_interleave(R, 0).repeat_interleave(C, 1);
  sp = sp.narrow(0, 0, w.size(0)).narrow(1, 0, w.size(1));
  return torch::where(sp.logical_and(keep.logical_not()), torch::zeros_like(w), w);
}

uint32_t word_at(const HybridWeight& hw, int64_t byte_offset) {
  uint32_t v;
  std::memcpy(&v, hw.data.data_ptr<uint8_t>() + byte_offset, 4);
  return v;
}
uint16_t bits(const torch::Tensor& w, int64_t r, int64_t c) {
  return reinterpret_cast<const uint16_t*>(w.data_ptr())[r * w.size(1) + c];
}

}  // namespace

TEST(OpsHybridFormat, NibbleCodesAreThePtxOrderedOnes) {
  // PTX ordered_metadata: only 0x4, 0x8, 0x9, 0xC, 0xD, 0xE are legal; lower index in bits 1:0.
  EXPECT_EQ(hybrid_encode_nibble(0, 1), 0x4u);
  EXPECT_EQ(hybrid_encode_nibble(0, 2), 0x8u);
  EXPECT_EQ(hybrid_encode_nibble(1, 2), 0x9u);
  EXPECT_EQ(hybrid_encode_nibble(0, 3), 0xCu);
  EXPECT_EQ(hybrid_encode_nibble(1, 3), 0xDu);
  EXPECT_EQ(hybrid_encode_nibble(2, 3), 0xEu);
  int a, b;
  hybrid_decode_nibble(0xD, &a, &b);
  EXPECT_EQ(a, 1);
  EXPECT_EQ(b, 3);
}

TEST(OpsHybridFormat, TileBytesAndOffsets) {
  EXPECT_EQ(hybrid_tile_bytes(128, 128, HYBRID_TILE_DENSE), 32768);
  EXPECT_EQ(hybrid_tile_bytes(128, 128, HYBRID_TILE_SPARSE24), 18432);  // 16384 values + 2048 metadata
  auto gen = at::detail::createCPUGenerator(1);
  auto w = random_weight(200, 300, torch::kBFloat16, gen);  // 2 x 3 tiles, ragged both ways
  auto tmap = torch::tensor({1, 0, 1, 0, 0, 1}, torch::kUInt8).view({2, 3});
  auto hw = hybrid_pack(w, tmap, random_keep_mask(200, 300, gen));
  std::vector<int64_t> want = {0, 18432, 18432 + 32768, 2 * 18432 + 32768, 2 * 18432 + 2 * 32768,
                               2 * 18432 + 3 * 32768, 3 * 18432 + 3 * 32768};
  ASSERT_EQ(hw.tile_offsets.numel(), 7);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(hw.tile_offsets[i].item<int64_t>(), want[i]) << i;
  EXPECT_EQ(hw.data.numel(), want.back());
  EXPECT_NEAR(hw.sparse_tile_fraction(), 0.5, 1e-12);
}

TEST(OpsHybridFormat, SparseMetadataAndValueOrderByHand) {
  // One 16x64 2:4 tile. Row 0 chunks 0..3 keep {0,1}, {1,3}, {2,3}, {0,3}; row 8 keeps {0,2} everywhere;
  // all other rows keep {0,1}.
  const int64_t N = 16, K = 64;
  auto keep = torch::zeros({N, K}, torch::kBool);
  for (int r = 0; r < N; ++r)
    for (int c = 0; c < 16; ++c) {
      int a = 0, b = 1;
      if (r == 0 && c < 4) {
        const int pairs[4][2] = {{0, 1}, {1, 3}, {2, 3}, {0, 3}};
        a = pairs[c][0];
        b = pairs[c][1];
      } else if (r == 8) {
        a = 0;
        b = 2;
      }
      keep[r][4 * c + a] = true;
      keep[r][4 * c + b] = true;
    }
  auto w = (torch::arange(N * K, torch::kFloat32).view({N, K}) + 1).to(torch::kBFloat16);  // distinct values
  auto hw = hybrid_pack(w, torch::ones({1, 1}, torch::kUInt8), keep, 16, 64);
  ASSERT_EQ(hw.data.numel(), HYBRID_SPARSE_UNIT_BYTES);
  // Lane 0 metadata: row 0 chunks 0..3 -> nibbles 4, D, E, C (bits 15:0 = 0xCED4); row 8 -> 8,8,8,8.
  EXPECT_EQ(word_at(hw, 1024 + 0), 0x8888CED4u);
  // Lane 1 (t = 1): rows 0 and 8, chunks 4..7: row 0 keeps {0,1} -> 0x4444, row 8 {0,2} -> 0x8888.
  EXPECT_EQ(word_at(hw, 1024 + 4), 0x88884444u);
  // Value words of lane 0, k32 step 0: a0a1 = row 0 chunk 0 (cols 0,1); a2a3 = row 8 chunk 0 (cols 0,2);
  // a4a5 = row 0 chunk 4 (cols 16,17); a6a7 = row 8 chunk 4 (cols 16,18).
  auto pair = [&](int r, int c0, int c1) { return uint32_t(bits(w, r, c0)) | (uint32_t(bits(w, r, c1)) << 16); };
  EXPECT_EQ(word_at(hw, 0), pair(0, 0, 1));
  EXPECT_EQ(word_at(hw, 4), pair(8, 0, 2));
  EXPECT_EQ(word_at(hw, 8), pair(0, 16, 17));
  EXPECT_EQ(word_at(hw, 12), pair(8, 16, 18));
  // Lane 1, step 0, a0a1: row 0 chunk 1 keeps {1,3} -> cols 5, 7.
  EXPECT_EQ(word_at(hw, 16), pair(0, 5, 7));
  // Lane 5 (g = 1, t = 1), step 1 (byte 512): a0a1 = row 1, chunk 8 + 1 = 9 -> cols 36, 37.
  EXPECT_EQ(word_at(hw, 512 + 5 * 16), pair(1, 36, 37));
}

TEST(OpsHybridFormat, DenseFragmentOrderByHand) {
  const int64_t N = 16, K = 64;
  auto w = (torch::arange(N * K, torch::kFloat32).view({N, K}) - 500).to(torch::kHalf);
  auto hw = hybrid_pack(w, torch::zeros({1, 1}, torch::kUInt8), torch::ones({N, K}, torch::kBool), 16, 64);
  auto pair = [&](int r, int c) { return uint32_t(bits(w, r, c)) | (uint32_t(bits(w, r, c + 1)) << 16); };
  EXPECT_EQ(word_at(hw, 0), pair(0, 0));    // lane 0 a0a1
  EXPECT_EQ(word_at(hw, 4), pair(8, 0));    // a2a3: row + 8
  EXPECT_EQ(word_at(hw, 8), pair(0, 8));    // a4a5: k + 8
  EXPECT_EQ(word_at(hw, 12), pair(8, 8));   // a6a7
  EXPECT_EQ(word_at(hw, 16), pair(0, 2));   // lane 1 (t = 1): k = 2
  EXPECT_EQ(word_at(hw, 16 * 4), pair(1, 0));  // lane 4 (g = 1)
  EXPECT_EQ(word_at(hw, 512 * 3 + 16 * 31 + 12), pair(15, 48 + 6 + 8));  // k16 step 3, lane 31, a6a7
}

struct RoundTripCase {
  int64_t N, K;
  int R, C;
  double frac;
  bool bf16;
};

class OpsHybridRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(OpsHybridRoundTrip, UnpackGivesMaskedWeight) {
  auto p = GetParam();
  auto gen = at::detail::createCPUGenerator(1234 + p.N * 7 + p.K);
  auto dt = p.bf16 ? torch::kBFloat16 : torch::kHalf;
  auto w = random_weight(p.N, p.K, dt, gen);
  auto keep = random_keep_mask(p.N, p.K, gen);
  auto tmap = torch::rand({(p.N + p.R - 1) / p.R, (p.K + p.C - 1) / p.C}, gen).lt(p.frac).to(torch::kUInt8);
  auto hw = hybrid_pack(w, tmap, keep, p.R, p.C);
  auto got = hybrid_unpack(hw);
  auto want = expected_dense(w, tmap, keep, p.R, p.C);
  ASSERT_EQ(got.scalar_type(), dt);
  EXPECT_TRUE(torch::equal(got.view(torch::kInt16), want.view(torch::kInt16)));
  // Pruned entries are exact +0 (bit pattern 0), never -0.
  auto sp = tmap.to(torch::kBool).repeat_interleave(p.R, 0).repeat_interleave(p.C, 1).narrow(0, 0, p.N).narrow(1, 0, p.K);
  auto pruned = sp.logical_and(keep.logical_not());
  EXPECT_EQ(got.view(torch::kInt16).masked_select(pruned).ne(0).sum().item<int64_t>(), 0);
}

INSTANTIATE_TEST_SUITE_P(Shapes, OpsHybridRoundTrip,
                         ::testing::Values(RoundTripCase{128, 128, 128, 128, 0.5, true},
                                           RoundTripCase{200, 300, 128, 128, 0.5, true},
                                           RoundTripCase{200, 300, 128, 128, 1.0, false},
                                           RoundTripCase{333, 517, 128, 128, 0.25, true},
                                           RoundTripCase{37, 102, 16, 64, 0.7, true},   // K % 4 != 0: ragged chunk
                                           RoundTripCase{257, 256, 64, 128, 0.9, false},
                                           RoundTripCase{64, 64, 32, 64, 0.0, true}));

TEST(OpsHybridFormat, MetadataComesFromTheMaskNotFromZeros) {
  auto gen = at::detail::createCPUGenerator(7);
  const int64_t N = 128, K = 128;
  auto keep = random_keep_mask(N, K, gen);
  auto tmap = torch::ones({1, 1}, torch::kUInt8);
  // Kept values are 0 and -0, pruned ones non-zero: a zero-based packer would pick the wrong positions.
  auto w = torch::where(keep, torch::zeros({N, K}), torch::ones({N, K}) * 3).to(torch::kBFloat16);
  w.view({-1}).slice(0, 0, N * K, 2).masked_fill_(keep.view({-1}).slice(0, 0, N * K, 2), -0.0);
  auto a = hybrid_pack(w, tmap, keep);
  auto b = hybrid_pack(random_weight(N, K, torch::kBFloat16, gen), tmap, keep);
  for (int64_t u = 0; u < 16; ++u) {  // metadata of each fragment unit is identical
    auto ma = a.data.narrow(0, u * HYBRID_SPARSE_UNIT_BYTES + 1024, 128);
    auto mb = b.data.narrow(0, u * HYBRID_SPARSE_UNIT_BYTES + 1024, 128);
    EXPECT_TRUE(torch::equal(ma, mb)) << "unit " << u;
  }
  auto got = hybrid_unpack(a);  // -0.0 at kept positions survives; pruned 3s are gone
  EXPECT_TRUE(torch::equal(got.view(torch::kInt16), torch::where(keep, w, torch::zeros_like(w)).view(torch::kInt16)));
}

// The prefill image (hybrid_format.h): positions worked out by hand from the swizzle rules, the metadata words
// copied, and every element of a ragged weight found where the rules put it (against hybrid_unpack).
TEST(OpsHybridFormat, PrefillImagePutsEachValueWhereTheDescriptorsRead) {
  auto gen = at::detail::createCPUGenerator(11);
  {
    const int64_t N = 128, K = 256;  // tile 0 dense, tile 1 2:4
    auto w = random_weight(N, K, torch::kBFloat16, gen);
    auto keep = random_keep_mask(N, K, gen);
    auto tmap = torch::tensor({0, 1}, torch::kUInt8).view({1, 2});
    auto hw = hybrid_pack(w, tmap, keep);
    hybrid_add_prefill_image(hw);
    ASSERT_EQ(hw.prefill_image.numel(), hw.data.numel());
    const uint8_t* im = hw.prefill_image.data_ptr<uint8_t>();
    auto at16 = [&](int64_t byte) {
      uint16_t v;
      std::memcpy(&v, im + byte, 2);
      return v;
    };
    // Dense (9, 70): slab 1 at 16384, row at 9·128, k 6 in chunk 0, chunk 0 ^ (9 mod 8) = 1, byte 2·6 = 12 in it.
    EXPECT_EQ(at16(16384 + 1152 + 16 + 12), bits(w, 9, 70));
    EXPECT_EQ(at16(16384 + 1152 + 16 + 14), bits(w, 9, 71));
    // 2:4 row 5, columns 200..203: tile 1 (offset 32768), slab 1 (+9216), group 2 of that slab, so compressed
    // columns 4 and 5: row at 5·64, chunk 0 ^ ((5 / 2) mod 4) = 2, byte 8 in it.
    std::vector<uint16_t> kept;
    for (int64_t c = 200; c < 204; ++c)
      if (keep[5][c].item<bool>()) kept.push_back(bits(w, 5, c));
    ASSERT_EQ(kept.size(), 2u);
    EXPECT_EQ(at16(32768 + 9216 + 320 + 32 + 8), kept[0]);
    EXPECT_EQ(at16(32768 + 9216 + 320 + 32 + 10), kept[1]);
    // Metadata: v1's words of slab 1, group g at 8192 + 128 g of the image slab.
    for (int g = 0; g < 8; ++g)
      EXPECT_EQ(std::memcmp(im + 32768 + 9216 + 8192 + 128 * g,
                            hw.data.data_ptr<uint8_t>() + 32768 + 9216 + g * HYBRID_SPARSE_UNIT_BYTES + 1024, 128),
                0)
          << "group " << g;
  }
  // Ragged weight, random mix: decode the image by the rules and compare with the blob's own unpack.
  const int64_t N = 300, K = 392;
  auto w = random_weight(N, K, torch::kBFloat16, gen);
  auto keep = random_keep_mask(N, K, gen);
  auto tmap = torch::rand({3, 4}, gen).lt(0.5).to(torch::kUInt8);
  auto hw = hybrid_pack(w, tmap, keep);
  hybrid_add_prefill_image(hw);
  auto want = hybrid_unpack(hw);
  std::vector<uint16_t> got(size_t(N * K), 0);
  const uint8_t* im = hw.prefill_image.data_ptr<uint8_t>();
  const HybridLayout& L = hw.layout;
  for (int64_t rb = 0; rb < L.row_blocks; ++rb)
    for (int64_t ct = 0; ct < L.col_tiles; ++ct) {
      const int64_t t = rb * L.col_tiles + ct;
      const bool sparse = L.kinds[t] == HYBRID_TILE_SPARSE24;
      for (int h = 0; h < 2; ++h) {
        const uint8_t* slab = im + L.offsets[t] + h * 8 * (sparse ? HYBRID_SPARSE_UNIT_BYTES : HYBRID_DENSE_UNIT_BYTES);
        for (int r = 0; r < 128; ++r)
          for (int c = 0; c < 16; ++c) {  // 4-groups of the slab
            const int64_t row = rb * 128 + r, col = ct * 128 + h * 64 + 4 * c;
            uint16_t v[4] = {0, 0, 0, 0};
            if (!sparse) {
              for (int e = 0; e < 4; ++e) std::memcpy(&v[e], slab + hybrid_image_dense_byte(r, 4 * c + e), 2);
            } else {
              uint32_t word;
              std::memcpy(&word, slab + HYBRID_IMAGE_META_OFFSET + 128 * (r / 16) + 4 * (4 * (r % 8) + c / 4), 4);
              int i0, i1;
              hybrid_decode_nibble((word >> (4 * ((c % 4) + 4 * ((r % 16) / 8)))) & 0xf, &i0, &i1);
              std::memcpy(&v[i0], slab + hybrid_image_sparse_byte(r, 2 * c), 2);
              std::memcpy(&v[i1], slab + hybrid_image_sparse_byte(r, 2 * c + 1), 2);
            }
            for (int e = 0; e < 4; ++e)
              if (row < N && col + e < K) got[size_t(row * K + col + e)] = v[e];
          }
      }
    }
  EXPECT_EQ(std::memcmp(got.data(), want.data_ptr(), got.size() * 2), 0);
  // The order comes with the image: per row-block pair (2 here, one with the pad), its row blocks (each once, the pad
  // = 3), and its section A count: the pair's slabs where both tiles are 2:4 (K = 392: tiles of 2, 2, 2, 1 slabs).
  ASSERT_TRUE(hw.prefill_order.defined());
  ASSERT_EQ(hw.prefill_order.numel(), 2 * (7 + 3));
  std::vector<int> seen(4, 0);
  for (int64_t g = 0; g < 2; ++g) {
    const int64_t r0 = hw.prefill_order[g * 10 + 1].item<int32_t>(), r1 = hw.prefill_order[g * 10 + 2].item<int32_t>();
    ASSERT_TRUE(r0 >= 0 && r0 < 3 && r1 >= 0 && r1 <= 3) << "pair " << g;
    ++seen[size_t(r0)], ++seen[size_t(r1)];
    int64_t both = 0;
    for (int64_t ct = 0; ct < 4; ++ct)
      both += (tmap[r0][ct].item<int>() && tmap[r1 < 3 ? r1 : r0][ct].item<int>()) * (ct < 3 ? 2 : 1);
    EXPECT_EQ(hw.prefill_order[g * 10].item<int32_t>(), both) << "pair " << g;
  }
  EXPECT_EQ(seen, std::vector<int>({1, 1, 1, 1}));
  auto small = hybrid_pack(w.narrow(0, 0, 64).narrow(1, 0, 64).contiguous(), torch::zeros({1, 1}, torch::kUInt8),
                           keep.narrow(0, 0, 64).narrow(1, 0, 64), 64, 64);
  EXPECT_THROW(hybrid_add_prefill_image(small), InvalidArgument);  // the image is for 128 × 128 tiles only
}

// v8's slab order (hybrid_prefill_order_raw), written out by hand for 3 row blocks × 4 tiles of a ragged K = 440
// (7 slabs: tile 3 has one). Kinds (1 = 2:4): row block 0: 1 1 0 1, row block 1: 1 0 1 0, row block 2: 0 1 1 0, so
// 2, 3 and 3 dense slabs: sorted, the pairs stay (0, 1) and (2, pad).
// Pair 0 (row blocks 0, 1): both 2:4 in tile 0 (section A: slabs 0, 1), then (2:4, dense) tiles 1 and 3 alternating
// with the (dense, 2:4) tile 2: tile 1, tile 2, tile 3, none dense in both. Pair 1: row block 2 with the pad (3):
// tiles 1, 2 in section A, then tiles 0 and 3, dense.
TEST(OpsHybridFormat, PrefillOrderRunsEachPairsAll24SlabsFirst) {
  HybridLayout L;
  L.rows = 300, L.cols = 440, L.row_blocks = 3, L.col_tiles = 4;
  L.kinds = {1, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0};
  ASSERT_EQ(hybrid_prefill_order_stride(L), 10);
  ASSERT_EQ(hybrid_prefill_order_words(L), 20);
  std::vector<uint32_t> o(20, 0xdeadbeefu);
  hybrid_prefill_order_raw(L, o.data());
  const uint32_t A0 = 1u << 30, A1 = 1u << 31;  // 2:4 in the pair's first / second row block
  const std::vector<uint32_t> want = {
      2, 0, 1, 0 | A0 | A1, 1 | A0 | A1, 2 | A0, 3 | A0, 4 | A1, 5 | A1, 6 | A0,  // pair 0
      4, 2, 3, 2 | A0 | A1, 3 | A0 | A1, 4 | A0 | A1, 5 | A0 | A1, 0, 1, 6};      // pair 1 (row block 2, pad)
  EXPECT_EQ(o, want);
}

// The pairing (session 34): row blocks sorted by dense slabs, lightest first, ties in row-block order, paired in that
// order; the heaviest of an odd count with the pad. 5 row blocks × 2 tiles, K = 256 (4 slabs). Kinds (1 = 2:4):
// 0 0 | 1 1 | 0 1 | 1 1 | 1 0, so 4, 0, 2, 0, 2 dense slabs: pairs (1, 3), (2, 4), (0, pad 5). plain_pairs keeps
// (0, 1), (2, 3), (4, pad) as before.
TEST(OpsHybridFormat, PrefillOrderPairsRowBlocksOfEqualDenseWork) {
  HybridLayout L;
  L.rows = 640, L.cols = 256, L.row_blocks = 5, L.col_tiles = 2;
  L.kinds = {0, 0, 1, 1, 0, 1, 1, 1, 1, 0};
  ASSERT_EQ(hybrid_prefill_order_words(L), 3 * 7);
  const uint32_t A0 = 1u << 30, A1 = 1u << 31;
  std::vector<uint32_t> o(21, 0xdeadbeefu);
  hybrid_prefill_order_raw(L, o.data());
  EXPECT_EQ(o, std::vector<uint32_t>({
                   4, 1, 3, 0 | A0 | A1, 1 | A0 | A1, 2 | A0 | A1, 3 | A0 | A1,  // (1, 3): all 2:4
                   0, 2, 4, 2 | A0, 3 | A0, 0 | A1, 1 | A1,                      // (2, 4): one dense tile each
                   0, 0, 5, 0, 1, 2, 3}));                                       // (0, pad): all dense
  std::fill(o.begin(), o.end(), 0xdeadbeefu);
  hybrid_prefill_order_raw(L, o.data(), true);
  EXPECT_EQ(o, std::vector<uint32_t>({
                   0, 0, 1, 0 | A1, 1 | A1, 2 | A1, 3 | A1,                // (0, 1)
                   2, 2, 3, 2 | A0 | A1, 3 | A0 | A1, 0 | A1, 1 | A1,      // (2, 3)
                   2, 4, 5, 0 | A0 | A1, 1 | A0 | A1, 2, 3}));             // (4, pad)
}

// The decode kernel's k-split: every split covers K exactly with whole KB-groups and fits the partial slots (the
// kernel relies on both); the waves rule picks, on the H200's 132 SMs × 2 resident CTAs, the settings worked out by
// hand from its cost waves · (kpc + 1), which the sweep in docs/BENCHMARKS.md §4 found fastest or near it.
TEST(OpsHybridSplit, SplitsCoverKAndFitTheSlots) {
  for (int64_t RB : {1, 7, 32, 96, 224})
    for (int64_t CT : {1, 3, 32, 86, 112})
      for (int64_t nch : {1, 2})
        for (int KB : {1, 2})
          for (int64_t slots : {40, 264, 1056}) {
            const int64_t max_slots = 16 * 132 + 2 * RB;
            for (int waves = 0; waves < 2; ++waves) {
              DecodeSplit d = waves ? decode_split_waves(RB, CT, nch, KB, slots, max_slots)
                                    : decode_split(RB, CT, nch, KB, slots, max_slots);
              const std::string at = "RB " + std::to_string(RB) + " CT " + std::to_string(CT) + " nch " +
                                     std::to_string(nch) + " KB " + std::to_string(KB) + " slots " +
                                     std::to_string(slots) + (waves ? " waves" : " fixed");
              ASSERT_GE(d.S, 1) << at;
              EXPECT_EQ(d.KPC % KB, 0) << at;
              EXPECT_LT(int64_t(d.S - 1) * d.KPC, CT) << at;  // no empty split
              EXPECT_GE(int64_t(d.S) * d.KPC, CT) << at;      // every k-tile in some split
              EXPECT_TRUE(d.S == 1 || RB * nch * d.S <= max_slots) << at;
            }
          }
  const int64_t slots = 2 * 132;
  auto ctas = [&](int64_t RB, int64_t CT) {
    DecodeSplit d = decode_split_waves(RB, CT, 1, 2, slots, 16 * 132 + 2 * RB);
    return std::make_pair(RB * d.S, d.KPC);
  };
  EXPECT_EQ(ctas(32, 32), std::make_pair(int64_t(256), 4));    // 4096×4096: one wave of 4 k-tiles (cost 5)
  EXPECT_EQ(ctas(96, 32), std::make_pair(int64_t(768), 4));    // 12288×4096: 3 waves × 5 = 15
  EXPECT_EQ(ctas(224, 32), std::make_pair(int64_t(224), 32));  // 28672×4096: no split, one wave × 33
  EXPECT_EQ(ctas(32, 86), std::make_pair(int64_t(256), 12));   // 4096×11008: 8 splits, one wave × 13
}

// The prefill tile kernels' raster visits every (row unit, token block) exactly once, including a last group of
// fewer units, and keeps a group's units together; with an even unit count and group, CTAs 2k and 2k + 1 (one
// cluster of the x-sharing kernel) get units 2j, 2j + 1 of one token block.
TEST(OpsHybridSplit, GroupedRasterIsABijectionThatKeepsGroupsTogether) {
  for (int units : {1, 5, 16, 17, 48, 112})
    for (int TB : {1, 3, 16, 64})
      for (int group : {1, 8, 16}) {
        std::vector<int> seen(size_t(units) * TB, 0);
        for (int bid = 0; bid < units * TB; ++bid) {
          const RasterPos r = grouped_raster(bid, units, TB, group);
          const std::string at = "units " + std::to_string(units) + " TB " + std::to_string(TB) + " group " +
                                 std::to_string(group) + " bid " + std::to_string(bid);
          ASSERT_TRUE(r.unit >= 0 && r.unit < units && r.tb >= 0 && r.tb < TB) << at;
          ++seen[size_t(r.unit) * TB + r.tb];
          EXPECT_EQ(r.unit / group, bid / (group * TB)) << at;  // group g's CTAs are one contiguous range
        }
        for (size_t i = 0; i < seen.size(); ++i)
          ASSERT_EQ(seen[i], 1) << "units " << units << " TB " << TB << " group " << group << " at " << i;
      }
  // Hand-worked: 3 units, 2 token blocks, groups of 2: group {0, 1} × tb 0, 1, then unit 2 × tb 0, 1.
  const int want[6][2] = {{0, 0}, {1, 0}, {0, 1}, {1, 1}, {2, 0}, {2, 1}};
  for (int bid = 0; bid < 6; ++bid) {
    const RasterPos r = grouped_raster(bid, 3, 2, 2);
    EXPECT_EQ(r.unit, want[bid][0]) << bid;
    EXPECT_EQ(r.tb, want[bid][1]) << bid;
  }
}

// v8's stream-K tail: over all clusters' items every slab of every unit runs exactly once; a unit is cut at most
// once, its head in cluster c (that cluster's last item) and its tail in cluster c + 1 (its first item in the
// tail), and with the same cost in every unit each cluster's work is within a slab's cost of the even share.
TEST(OpsHybridSplit, PrefillTailCoversEverySlabOnceInEvenShares) {
  std::mt19937 rng(7);
  for (int G : {1, 2, 7, 66, 64})
    for (int units : {1, 5, 66, 67, 128, 131, 132, 384, 897})
      for (int nslab : {1, 3, 64, 172})
        for (int mix = 0; mix < 3; ++mix) {  // na: none, all, random per unit
          const std::string at = "G " + std::to_string(G) + " units " + std::to_string(units) + " nslab " +
                                 std::to_string(nslab) + " mix " + std::to_string(mix);
          std::vector<int> na(static_cast<size_t>(units));
          for (int& v : na) v = mix == 0 ? 0 : mix == 1 ? nslab : int(rng() % uint32_t(nslab + 1));
          const bool cut = prefill_tail_cut(units, G);
          ASSERT_EQ(cut, G > 1 && units > G && units % G != 0) << at;
          std::vector<int> seen(size_t(units) * nslab, 0);
          std::vector<int> head_of(size_t(units), -1), tail_of(size_t(units), -1);
          std::vector<int64_t> cost(size_t(G), 0);
          for (int cid = 0; cid < G; ++cid) {
            PrefillItem it;
            int items = 0;
            for (int j = 0; prefill_item(j, cid, G, units, cut, it); ++j, ++items) {
              ASSERT_TRUE(it.unit >= 0 && it.unit < units && 0 <= it.t0 && it.t0 < it.t1 &&
                          it.t1 <= PREFILL_TAIL_QUANTA)
                  << at << " cid " << cid << " j " << j;
              const int u = it.unit, n = na[size_t(u)];
              const int p0 = prefill_walk_cut(it.t0, n, nslab, it.a_first);
              const int p1 = prefill_walk_cut(it.t1, n, nslab, it.a_first);
              ASSERT_LE(p0, p1) << at;
              if (p0 == p1) continue;  // an empty piece: the other cluster runs the whole unit
              if (p0 > 0) {            // a tail: this cluster's first item after its whole units
                ASSERT_EQ(tail_of[size_t(u)], -1) << at;
                tail_of[size_t(u)] = cid;
              }
              if (p1 < nslab) {
                ASSERT_EQ(head_of[size_t(u)], -1) << at;
                head_of[size_t(u)] = cid;
              }
              for (int half = 0; half < 2; ++half) {
                bool sa;
                int i0, i1;
                if (!prefill_section(it.a_first, half, n, nslab, p0, p1, sa, i0, i1)) continue;
                ASSERT_TRUE(sa ? (0 <= i0 && i1 <= n) : (n <= i0 && i1 <= nslab)) << at;
                for (int i = i0; i < i1; ++i) ++seen[size_t(u) * nslab + i], cost[size_t(cid)] += i < n ? 1 : 2;
              }
            }
            ASSERT_LE(items, units) << at;
          }
          for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << at << " slab " << i;
          for (int u = 0; u < units; ++u) {
            ASSERT_EQ(head_of[size_t(u)] < 0, tail_of[size_t(u)] < 0) << at << " unit " << u;
            if (head_of[size_t(u)] >= 0) {
              ASSERT_TRUE(cut) << at;
              EXPECT_EQ(tail_of[size_t(u)], head_of[size_t(u)] + 1) << at << " unit " << u;
            }
          }
          if (cut && mix != 2) {  // equal units: the tail's shares within one slab (cost 2) of even
            const int64_t per = mix == 0 ? 2 * nslab : nslab, n = G + units % G;
            const int64_t whole = (units / G - 1) * per;
            for (int cid = 0; cid < G; ++cid) {
              const double share = double(n) * double(per) / G;
              EXPECT_NEAR(double(cost[size_t(cid)] - whole), share, 2.0 + 1e-9) << at << " cid " << cid;
            }
          }
        }
}

// Hand-worked cuts: 10 slabs, 4 of them all-2:4 (cost 4 + 12 = 16). Half the work (t = 2048 of 4096, cost 8) in
// A-first order is the 4 A slabs and 2 B slabs; B first, 4 B slabs. A quarter (cost 4): 4 A slabs; 2 B slabs.
TEST(OpsHybridSplit, PrefillWalkCutByCost) {
  EXPECT_EQ(prefill_walk_cut(2048, 4, 10, true), 6);
  EXPECT_EQ(prefill_walk_cut(2048, 4, 10, false), 4);
  EXPECT_EQ(prefill_walk_cut(1024, 4, 10, true), 4);
  EXPECT_EQ(prefill_walk_cut(1024, 4, 10, false), 2);
  EXPECT_EQ(prefill_walk_cut(0, 4, 10, true), 0);
  EXPECT_EQ(prefill_walk_cut(4096, 4, 10, false), 10);
  // 128 units on 66 clusters: one full wave and a partial one, so all 128 are the tail, 128 / 66 = 1.94 units per
  // cluster; cluster 0 runs unit 0 and the head of unit 1.
  PrefillItem it;
  ASSERT_TRUE(prefill_item(0, 0, 66, 128, true, it));
  EXPECT_EQ(it.unit, 0);
  EXPECT_EQ(it.t1, 4096);
  ASSERT_TRUE(prefill_item(1, 0, 66, 128, true, it));
  EXPECT_EQ(it.unit, 1);
  EXPECT_EQ(it.t0, 0);
  EXPECT_EQ(it.t1, int(int64_t(128) * 4096 / 66 % 4096));
  EXPECT_FALSE(prefill_item(2, 0, 66, 128, true, it));
}

// The cluster reduction's rule: splits capped at the cluster size, resident CTAs taken per S (clusters fill the GPCs
// unevenly), an S that cannot launch skipped; S = 1 (no reduction) always allowed. Hand-worked on 12288×4096 (RB 96,
// CT 32, KB 2) with 264 slots except 240 at S = 8: S = 8 (768 CTAs) costs 4 waves × 5 = 20, S = 4 (kpc 8) 2 × 9 = 18,
// S = 2 (kpc 16) 1 × 17 = 17, the best; without S = 2 it is S = 4.
TEST(OpsHybridSplit, ClusterRuleCapsTheSplitAndUsesItsSlots) {
  for (int64_t RB : {1, 7, 32, 96})
    for (int64_t CT : {1, 3, 32, 86, 112})
      for (int KB : {1, 2}) {
        const DecodeSplit d = decode_split_waves_by(
            RB, CT, 1, KB, [](int64_t S) { return S == 5 ? 0 : 264 - 2 * S; }, 8, INT64_MAX);
        const std::string at = "RB " + std::to_string(RB) + " CT " + std::to_string(CT) + " KB " + std::to_string(KB);
        ASSERT_GE(d.S, 1) << at;
        EXPECT_LE(d.S, 8) << at;
        EXPECT_NE(d.S, 5) << at;
        EXPECT_EQ(d.KPC % KB, 0) << at;
        EXPECT_LT(int64_t(d.S - 1) * d.KPC, CT) << at;
        EXPECT_GE(int64_t(d.S) * d.KPC, CT) << at;
        EXPECT_GT(d.cost, 0) << at;
      }
  auto pick = [](bool two_ok) {
    const DecodeSplit d = decode_split_waves_by(
        96, 32, 1, 2, [two_ok](int64_t S) { return S == 8 ? 240 : S == 2 && !two_ok ? 0 : 264; }, 8, INT64_MAX);
    return std::make_tuple(d.S, d.KPC, d.cost);
  };
  EXPECT_EQ(pick(true), std::make_tuple(2, 16, int64_t(17)));
  EXPECT_EQ(pick(false), std::make_tuple(4, 8, int64_t(18)));
  // Uncapped, constant slots: the plain waves rule.
  const DecodeSplit w = decode_split_waves(96, 32, 1, 2, 264, INT64_MAX);
  EXPECT_EQ(std::make_tuple(w.S, w.KPC, w.cost), std::make_tuple(8, 4, int64_t(15)));
}

// The launcher's plan: without clusters the plain waves split; with them the cluster split where it costs no more
// (ties go to the cluster), the workspace split where the cluster cap makes it dearer; a fixed target keeps its split
// and takes a cluster only where S fits one that can launch.
TEST(OpsHybridSplit, PlanPicksTheClusterWhereItCostsNoMore) {
  const int64_t big = INT64_MAX;
  auto all = [](int64_t) { return int64_t(264); };
  // 12288×4096: the waves split is S = 8 (cost 15) and fits a cluster with the same slots: cluster.
  DecodePlan p = decode_plan(96, 32, 1, 2, 264, 0, false, all, 8, big);
  EXPECT_EQ(std::make_tuple(p.split.S, p.split.KPC, p.cluster), std::make_tuple(8, 4, false));
  p = decode_plan(96, 32, 1, 2, 264, 0, true, all, 8, big);
  EXPECT_EQ(std::make_tuple(p.split.S, p.split.KPC, p.cluster), std::make_tuple(8, 4, true));
  // N = 1024 (RB 8), K = 4096: the waves split is S = 16 (kpc 2, 128 CTAs, cost 3); capped at 8 the cluster split
  // costs 5 (kpc 4, one wave): workspace.
  p = decode_plan(8, 32, 1, 2, 264, 0, true, all, 8, big);
  EXPECT_EQ(std::make_tuple(p.split.S, p.split.KPC, p.cluster), std::make_tuple(16, 2, false));
  // Clusters that cannot launch at all: workspace.
  p = decode_plan(96, 32, 1, 2, 264, 0, true, [](int64_t) { return int64_t(0); }, 8, big);
  EXPECT_EQ(std::make_tuple(p.split.S, p.cluster), std::make_tuple(8, false));
  // Fixed targets on 132 SMs (decode_split): 2 per SM gives 12288×4096 S = 3 (kpc 12), in a cluster; 4 per SM gives
  // 4096×4096 S = 16 (kpc 2), over the cap: workspace.
  p = decode_plan(96, 32, 1, 2, 264, 264, true, all, 8, big);
  EXPECT_EQ(std::make_tuple(p.split.S, p.split.KPC, p.cluster), std::make_tuple(3, 12, true));
  p = decode_plan(32, 32, 1, 2, 264, 528, true, all, 8, big);
  EXPECT_EQ(std::make_tuple(p.split.S, p.split.KPC, p.cluster), std::make_tuple(16, 2, false));
}

// The row split at 9..16 tokens: on 132 SMs the LLaMA shapes' row blocks (N / 128) give 2·RB CTAs. With the
// workspace reduction the rule takes 132 ≤ 2·RB < 396, i.e. 66 ≤ RB ≤ 197; with the cluster reduction 132 ≤ 2·RB <
// 198, i.e. 66 ≤ RB ≤ 98.
TEST(OpsHybridSplit, RowSplitWhereItsCtasFillTheSmsOnceOrTwice) {
  for (auto [N, want] : {std::pair<int64_t, bool>{4096, false}, {6144, false}, {12288, true}, {14336, true},
                         {22016, true}, {28672, false}})
    EXPECT_EQ(decode_row_split_auto(N / 128, 132, false), want) << N;
  EXPECT_FALSE(decode_row_split_auto(65, 132, false));  // 130 CTAs: two SMs idle
  EXPECT_TRUE(decode_row_split_auto(66, 132, false));
  EXPECT_TRUE(decode_row_split_auto(197, 132, false));  // 394 CTAs
  EXPECT_FALSE(decode_row_split_auto(198, 132, false));
  for (auto [N, want] : {std::pair<int64_t, bool>{4096, false}, {6144, false}, {12288, true}, {14336, false},
                         {22016, false}, {28672, false}})
    EXPECT_EQ(decode_row_split_auto(N / 128, 132, true), want) << N;
  EXPECT_FALSE(decode_row_split_auto(65, 132, true));
  EXPECT_TRUE(decode_row_split_auto(66, 132, true));
  EXPECT_TRUE(decode_row_split_auto(98, 132, true));  // 196 CTAs
  EXPECT_FALSE(decode_row_split_auto(99, 132, true));  // 198 CTAs: 1.5 per SM
}

// The pipelined k-split at 9..16 tokens: one wave (ctas ≤ resident) that fills ≥ 90% of the SMs. On 132 SMs with
// one CTA per SM the N = 4096 shapes' plans (32 row blocks × 4 splits = 128 CTAs) take it; the plans of 6144 rows
// (8 splits, 384 CTAs), 28672 rows (4 splits, 896 CTAs) and 14336 rows (no split, 112 CTAs: 85%) do not.
TEST(OpsHybridSplit, PipelinedKSplitOnlyForOneNearlyFullWave) {
  EXPECT_TRUE(decode_pipelined_k_split_auto(128, 132, 132));
  EXPECT_TRUE(decode_pipelined_k_split_auto(119, 132, 132));   // 90.2%
  EXPECT_FALSE(decode_pipelined_k_split_auto(118, 132, 132));  // 89.4%
  EXPECT_FALSE(decode_pipelined_k_split_auto(96, 132, 132));
  EXPECT_FALSE(decode_pipelined_k_split_auto(224, 132, 132));
  EXPECT_FALSE(decode_pipelined_k_split_auto(128, 124, 132));  // clusters leave fewer resident slots than CTAs
  // The plans behind those counts: decode_plan with one resident CTA per SM (132 slots, clusters fill them all).
  const int64_t big = INT64_MAX;
  auto one_per_sm = [](int64_t) { return int64_t(132); };
  for (int64_t ct : {32, 86, 112}) {  // K = 4096, 11008, 14336 with N = 4096: 32 row blocks
    const DecodePlan p = decode_plan(32, ct, 1, 2, 132, 0, true, one_per_sm, 8, big);
    EXPECT_EQ(p.split.S, 4) << ct;
    EXPECT_TRUE(decode_pipelined_k_split_auto(32 * p.split.S, 132, 132)) << ct;
  }
  for (auto [rb, want_s] : {std::pair<int64_t, int>{48, 8}, {224, 4}, {112, 1}}) {
    const DecodePlan p = decode_plan(rb, 32, 1, 2, 132, 0, true, one_per_sm, 8, big);
    EXPECT_EQ(p.split.S, want_s) << rb;
    EXPECT_FALSE(decode_pipelined_k_split_auto(rb * p.split.S, 132, 132)) << rb;
  }
}

TEST(OpsHybridLinear, CpuReferenceMatchesFloat64Gemm) {
  auto gen = at::detail::createCPUGenerator(99);
  const int64_t N = 300, K = 256;
  auto w = random_weight(N, K, torch::kBFloat16, gen);
  auto keep = random_keep_mask(N, K, gen);
  auto tmap = torch::tensor({1, 0, 0, 1, 1, 1}, torch::kUInt8).view({3, 2});
  auto hw = hybrid_pack(w, tmap, keep);
  auto x = random_weight(6, K, torch::kBFloat16, gen).view({2, 3, K});
  auto y = hybrid_linear(x, hw);
  ASSERT_EQ(y.sizes(), torch::IntArrayRef({2, 3, N}));
  ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
  auto want = torch::matmul(x.to(torch::kFloat64), expected_dense(w, tmap, keep, 128, 128).to(torch::kFloat64).t());
  auto err = (y.to(torch::kFloat64) - want).norm().item<double>() / want.norm().item<double>();
  EXPECT_LT(err, 4e-3);  // bf16 output rounding only
  EXPECT_GT(err, 0.0);
  // A pruned-weight change must not move the result; a kept-weight change must.
  auto w2 = w.clone();
  w2[0][0] = keep[0][0].item<bool>() ? 9.0 : 0.25;
  auto y2 = hybrid_linear(x, hybrid_pack(w2, tmap, keep));
  EXPECT_EQ(torch::equal(y2, y), !keep[0][0].item<bool>());
}

TEST(OpsHybridLinear, BadInputsThrow) {
  auto gen = at::detail::createCPUGenerator(5);
  auto w = random_weight(128, 128, torch::kBFloat16, gen);
  auto keep = random_keep_mask(128, 128, gen);
  auto one = torch::ones({1, 1}, torch::kUInt8);
  EXPECT_THROW(hybrid_pack(w.to(torch::kFloat32), one, keep), InvalidArgument);
  EXPECT_THROW(hybrid_pack(w, torch::ones({2, 1}, torch::kUInt8), keep), InvalidArgument);
  EXPECT_THROW(hybrid_pack(w, one * 2, keep), InvalidArgument);
  EXPECT_THROW(hybrid_pack(w, one, keep.narrow(1, 0, 64)), InvalidArgument);
  EXPECT_THROW(hybrid_pack(w, one, keep, 100, 128), InvalidArgument);
  EXPECT_THROW(hybrid_pack(w, one, keep, 128, 96), InvalidArgument);
  auto three = keep.clone();
  three[5].slice(0, 0, 4).fill_(true);  // 3+ kept of 4
  EXPECT_THROW(hybrid_pack(w, one, three), InvalidArgument);
  auto onekept = keep.clone();
  onekept[7].slice(0, 8, 12).fill_(false);
  onekept[7][9] = true;  // 1 kept of 4
  EXPECT_THROW(hybrid_pack(w, one, onekept), InvalidArgument);
  EXPECT_NO_THROW(hybrid_pack(w, torch::zeros({1, 1}, torch::kUInt8), three));  // mask is ignored in dense tiles
  auto hw = hybrid_pack(w, one, keep);
  EXPECT_THROW(hybrid_linear(torch::ones({4, 64}, torch::kBFloat16), hw), InvalidArgument);
  EXPECT_THROW(hybrid_linear(torch::ones({4, 128}, torch::kHalf), hw), InvalidArgument);
  try {
    hybrid_linear(torch::ones({4, 64}, torch::kBFloat16), hw);
  } catch (const InvalidArgument& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("hybrid_linear"), std::string::npos);
    EXPECT_EQ(m.find('\n'), std::string::npos);  // one line
  }
}

// The CUDA kernels behind the front (split-K decode for M <= 32, the wgmma kernels above it on sm_90) against the CPU
// reference on the same packed weight: ragged N and K, every tile mix, bf16 and fp16. Skips without a GPU.
// Every launch option of the front (PDL, cluster reduction, row split, one wgmma group per prefill slab, one decode
// load batch, v7's clusters sharing x: odd row-block counts give it a pad CTA; v8 on weights with a prefill image
// and order where a tile is dense) on each case; restored after.
TEST(OpsHybridLinear, CudaKernelsMatchTheCpuReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device (or a CPU-only LibTorch): kernels not run";
  const HybridKernelOptions saved = hybrid_kernel_options();
  auto gen = at::detail::createCPUGenerator(2024);
  struct Case { int64_t N, K; torch::ScalarType dt; };
  // 2900 × 520: 23 row blocks, so at M = 700 the tile schedule runs (not stream-K).
  for (const Case& c : {Case{1000, 1096, torch::kBFloat16}, Case{384, 512, torch::kHalf},
                        Case{2900, 520, torch::kBFloat16}}) {
    const int64_t RB = (c.N + 127) / 128, CT = (c.K + 127) / 128;
    auto w = random_weight(c.N, c.K, c.dt, gen);
    auto keep = random_keep_mask(c.N, c.K, gen);
    // (0.9: the mix of the prefill target, a few dense slabs among the 2:4 ones in every kernel)
    for (double f : {0.0, 0.5, 0.9, 1.0}) {
      auto tmap = torch::rand({RB, CT}, gen).lt(f).to(torch::kUInt8);
      auto hw = hybrid_pack(w, tmap, keep);
      auto hwc = hw.to(torch::Device(torch::kCUDA, 0));
      // With the prefill image: v7 reads it by descriptor (SS) instead of hwc's blob (RS); where a tile is dense, v8
      // runs instead (the image's slab order); hwi7 has no order, so v7 runs there too.
      HybridWeight hwi = hw;
      hybrid_add_prefill_image(hwi);
      ASSERT_TRUE(hwi.prefill_order.defined());
      hwi = hwi.to(torch::Device(torch::kCUDA, 0));
      HybridWeight hwi7 = hwi;
      hwi7.prefill_order = torch::Tensor();
      // Both sides of each auto-dispatch cut; 4096: several units per cluster in v7's persistent loop (2900 rows).
      for (int64_t M : {1, 16, 64, 65, 128, 129, 700, 4096}) {
        auto x = random_weight(M, c.K, c.dt, gen);
        auto want = hybrid_linear_ref(x, hw).to(torch::kFloat64);
        for (const char* opts :
             {"plain", "pdl", "cluster", "pdl+cluster", "workspace", "pdl+workspace", "rows", "pdl+rows", "batched",
              "pdl+rows+batched", "onebatch", "pdl+rows+onebatch", "sharex", "sharex+image", "sharex+image-v7"}) {
          const std::string o(opts);
          // not option strings: sharex on the weight with the image (and order), or with the image alone
          const bool image = o.rfind("sharex+image", 0) == 0;
          set_hybrid_kernel_options(parse_hybrid_kernel_options(image ? "sharex" : o));
          const HybridWeight& use = !image ? hwc : o == "sharex+image" ? hwi : hwi7;
          auto got = hybrid_linear(x.to(torch::kCUDA), use).cpu().to(torch::kFloat64);
          const std::string at = o + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
                                 " M=" + std::to_string(M) + " f=" + std::to_string(f);
          ASSERT_TRUE(torch::isfinite(got).all().item<bool>()) << at;
          const double err = (got - want).norm().item<double>() / want.norm().item<double>();
          EXPECT_LT(err, 1e-2) << at;
        }
      }
    }
  }
  set_hybrid_kernel_options(saved);
}

TEST(OpsHybridLinear, KernelOptionsParseAndPrint) {
  for (const char* s :
       {"plain", "pdl", "cluster", "workspace", "rows", "pdl+cluster", "pdl+workspace", "pdl+rows", "cluster+rows",
        "workspace+rows", "pdl+cluster+rows", "batched", "pdl+batched", "rows+batched", "pdl+cluster+rows+batched",
        "pdl+workspace+rows+batched", "onebatch", "pdl+onebatch", "pdl+cluster+rows+batched+onebatch", "sharex",
        "pdl+sharex", "pdl+cluster+rows+batched+onebatch+sharex"})
    EXPECT_EQ(to_string(parse_hybrid_kernel_options(s)), s);
  EXPECT_EQ(to_string(HybridKernelOptions{}), "pdl");  // the default: PDL in the decode step, nothing else
  EXPECT_FALSE(parse_hybrid_kernel_options("plain").pdl);
  const HybridKernelOptions b = parse_hybrid_kernel_options("onebatch+pdl");
  EXPECT_TRUE(b.one_batch && b.pdl && !b.row_split && !b.prefill_batched);
  EXPECT_EQ(to_string(b), "pdl+onebatch");
  const HybridKernelOptions o = parse_hybrid_kernel_options("rows+pdl");  // any order; printed canonically
  EXPECT_TRUE(o.pdl && o.row_split && !o.cluster_reduction);
  EXPECT_EQ(to_string(o), "pdl+rows");
  EXPECT_FALSE(parse_hybrid_kernel_options("cluster").pdl);
  const HybridKernelOptions w = parse_hybrid_kernel_options("rows+workspace");
  EXPECT_TRUE(w.workspace_reduction && w.row_split && !w.cluster_reduction);
  EXPECT_EQ(to_string(w), "workspace+rows");
  const HybridKernelOptions g = parse_hybrid_kernel_options("batched+rows");
  EXPECT_TRUE(g.prefill_batched && g.row_split && !g.pdl && !g.cluster_reduction);
  EXPECT_EQ(to_string(g), "rows+batched");
  for (const char* bad :
       {"fast", "", "+", "pdl+", "+pdl", "pdl++cluster", "pdl+pdl", "plain+pdl", "PDL", "tall", "pdl+tall",
        "globala", "batched+globala", "batched+batched", "cluster+workspace", "workspace+pdl+cluster",
        "workspace+workspace", "onebatch+onebatch", "one_batch", "v3h", "sharex+sharex", "share_x"})
    EXPECT_THROW(parse_hybrid_kernel_options(bad), InvalidArgument) << bad;
}
