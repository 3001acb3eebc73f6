// Mask file and MaskLLM npz: hand-computed bit packing, round trips, 2:4 validation, wrong-model and malformed files.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "mask/mask.h"
#include "model/model.h"
#include "prune/prune.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace patchllm;

namespace {

// A valid hybrid mask for every decoder linear of `dir`: random 2:4, with the tiles where tile_map == 0 all ones.
MaskSet random_hybrid(const std::string& dir, int64_t r, int64_t c, uint64_t seed) {
  torch::manual_seed(seed);
  MaskSet m;
  m.tile_r = r;
  m.tile_c = c;
  m.fingerprint = model_fingerprint(dir, &m.fingerprint_desc);
  m.meta["method"] = "test";
  for (const auto& [name, shape] : mask_model_shapes(dir)) {
    LinearMask lm;
    auto keep = prune_select_24(torch::rand({shape[0], shape[1]}));
    lm.tile_map = (torch::rand({(shape[0] + r - 1) / r, (shape[1] + c - 1) / c}) < 0.6).to(torch::kUInt8);
    auto dense = lm.tile_map.to(torch::kBool).logical_not().repeat_interleave(r, 0).repeat_interleave(c, 1);
    lm.keep = torch::logical_or(keep, dense.narrow(0, 0, shape[0]).narrow(1, 0, shape[1])).contiguous();
    lm.tile_scores = torch::rand(lm.tile_map.sizes());
    m.masks[name] = lm;
  }
  return m;
}

template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Mask, PackbitsIsNumpyOrder) {
  auto keep = torch::tensor({1, 0, 1, 1, 0, 0, 0, 0, 1}, torch::kBool);
  auto p = mask_packbits(keep);
  ASSERT_EQ(p.numel(), 2);
  EXPECT_EQ(p[0].item<int>(), 0b10110000);  // np.packbits([1,0,1,1,0,0,0,0,1]) == [176, 128]
  EXPECT_EQ(p[1].item<int>(), 0b10000000);
  EXPECT_TRUE(mask_unpackbits(p, {9}).equal(keep));
  auto big = torch::rand({7, 13}) < 0.5;
  EXPECT_TRUE(mask_unpackbits(mask_packbits(big), {7, 13}).equal(big));
  EXPECT_THROW(mask_unpackbits(p, {17}), FormatError);
}

TEST(Mask, TileDensityCountsRaggedTilesByTheirSize) {
  auto keep = torch::zeros({5, 6}, torch::kBool);
  keep[4][5] = true;  // the single element of... the ragged corner tile (rows 4, cols 4-5) holds 1 of 2
  keep[0][0] = true;
  auto d = mask_tile_density(keep, 4, 4);
  ASSERT_EQ(d.sizes(), torch::IntArrayRef({2, 2}));
  EXPECT_FLOAT_EQ(d[0][0].item<float>(), 1.0f / 16);
  EXPECT_FLOAT_EQ(d[0][1].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(d[1][1].item<float>(), 0.5f);
}

TEST(Mask, FileRoundTripKeepsMasksTileMapsScoresAndMetadata) {
  std::string dir = test::tiny_model_write(test::temp_dir("mask_rt") + "/m", {});
  MaskSet m = random_hybrid(dir, 32, 16, 1);
  std::string path = test::temp_dir("mask_rt_f") + "/masks.safetensors";
  mask_save(path, m);
  MaskSet r = mask_load(path);
  EXPECT_EQ(r.pattern, "2:4");
  EXPECT_EQ(r.tile_r, 32);
  EXPECT_EQ(r.tile_c, 16);
  EXPECT_EQ(r.fingerprint, m.fingerprint);
  EXPECT_EQ(r.meta.at("method"), "test");
  EXPECT_EQ(r.meta.at("patchllm_format_version"), "1");
  EXPECT_NEAR(std::stod(r.meta.at("achieved_sparsity")), m.sparsity(), 1e-12);
  ASSERT_EQ(r.masks.size(), m.masks.size());
  for (const auto& [name, lm] : m.masks) {
    EXPECT_TRUE(r.masks.at(name).keep.equal(lm.keep)) << name;
    EXPECT_TRUE(r.masks.at(name).tile_map.equal(lm.tile_map)) << name;
    EXPECT_TRUE(r.masks.at(name).tile_scores.equal(lm.tile_scores.to(torch::kFloat32))) << name;
  }
  EXPECT_NO_THROW(mask_check_model(r, dir));
  // Unstructured round trip.
  MaskSet u;
  u.pattern = "unstructured";
  u.fingerprint = m.fingerprint;
  for (const auto& [name, lm] : m.masks) u.masks[name].keep = torch::rand(lm.keep.sizes()) < 0.3;
  mask_save(path, u);
  MaskSet ru = mask_load(path);
  EXPECT_EQ(ru.pattern, "unstructured");
  for (const auto& [name, lm] : u.masks) EXPECT_TRUE(ru.masks.at(name).keep.equal(lm.keep));
}

TEST(Mask, NpzRoundTripAndNumpyLayout) {
  std::string dir = test::tiny_model_write(test::temp_dir("mask_npz") + "/m", {});
  MaskSet m = random_hybrid(dir, 128, 128, 2);  // one tile per matrix; made pure 2:4 below
  for (auto& [n, lm] : m.masks) {
    lm.tile_map.fill_(1);
    lm.keep = prune_select_24(torch::rand(lm.keep.sizes()));
  }
  std::string path = test::temp_dir("mask_npz_f") + "/mask_compressed.npz";
  mask_save(path, m);
  // The zip's first entry is a stored .npy named "<weight>.mask.npy" holding np.packbits of the flattened mask.
  std::string raw = file_read(path);
  ASSERT_EQ(raw.substr(0, 4), std::string("PK\x03\x04", 4));
  EXPECT_EQ(raw[8], 0);  // method: stored
  const auto& first = *m.masks.begin();
  EXPECT_NE(raw.find(first.first + ".mask.npy"), std::string::npos);
  EXPECT_NE(raw.find("{'descr': '|u1', 'fortran_order': False, 'shape': ("), std::string::npos);
  MaskSet r = mask_load_npz(path, mask_model_shapes(dir));
  EXPECT_EQ(r.pattern, "2:4");
  for (const auto& [name, lm] : m.masks) EXPECT_TRUE(r.masks.at(name).keep.equal(lm.keep)) << name;
  EXPECT_NE(error_of([&] { mask_load_npz(path, {}); }).find("give the model"), std::string::npos);
  // Truncated zip.
  std::string bad = test::temp_dir("mask_npz_bad") + "/bad.npz";
  file_write_atomic(bad, raw.substr(0, raw.size() / 2));
  EXPECT_THROW(mask_load_npz(bad, mask_model_shapes(dir)), FormatError);
}

TEST(Mask, WrongModelIsAOneLineError) {
  std::string tmp = test::temp_dir("mask_wrong");
  std::string a = test::tiny_model_write(tmp + "/a", {});
  test::TinySpec sb;
  sb.seed = 5;  // same shapes, other weights
  std::string b = test::tiny_model_write(tmp + "/b", sb);
  test::TinySpec sc;
  sc.inter = 128;  // other shapes
  std::string c = test::tiny_model_write(tmp + "/c", sc);
  MaskSet m = random_hybrid(a, 32, 32, 3);
  std::string e = error_of([&] { mask_check_model(m, b); });
  EXPECT_NE(e.find("another model"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  e = error_of([&] { mask_check_model(m, c); });
  EXPECT_NE(e.find("another model"), std::string::npos) << e;
  m.fingerprint.clear();  // e.g. an imported npz: shapes still checked
  e = error_of([&] { mask_check_model(m, c); });
  EXPECT_NE(e.find("mlp.down_proj.weight is [64, 96] but"), std::string::npos) << e;
}

TEST(Mask, MalformedFilesGiveClearErrors) {
  std::string dir = test::tiny_model_write(test::temp_dir("mask_bad") + "/m", {});
  std::string tmp = test::temp_dir("mask_bad_f");
  MaskSet m = random_hybrid(dir, 32, 32, 4);
  // A group keeping 3 of 4 inside a 2:4 tile.
  auto& lm = m.masks.begin()->second;
  lm.tile_map.fill_(1);
  lm.keep = prune_select_24(torch::rand(lm.keep.sizes()));
  lm.keep[0][0] = lm.keep[0][1] = lm.keep[0][2] = true;
  lm.keep[0][3] = false;
  mask_save(tmp + "/g.safetensors", m);
  std::string e = error_of([&] { mask_load(tmp + "/g.safetensors"); });
  EXPECT_NE(e.find("row 0 columns 0..3 keeps 3 of 4 in a 2:4 tile"), std::string::npos) << e;
  EXPECT_NE(e.find("g.safetensors"), std::string::npos) << e;
  // Not a mask file / other version / missing tensors / missing file.
  safetensors_write(tmp + "/w.safetensors", {{"x", torch::zeros({2})}});
  e = error_of([&] { mask_load(tmp + "/w.safetensors"); });
  EXPECT_NE(e.find("not a patchllm mask file"), std::string::npos) << e;
  safetensors_write(tmp + "/v.safetensors", {{"a.shape", torch::tensor({2, 4}, torch::kInt64)}},
                    {{"format", "patchllm-mask"}, {"patchllm_format_version", "99"}});
  e = error_of([&] { mask_load(tmp + "/v.safetensors"); });
  EXPECT_NE(e.find("version 99 is not supported"), std::string::npos) << e;
  safetensors_write(tmp + "/s.safetensors",
                    {{"a.shape", torch::tensor({2, 4}, torch::kInt64)}, {"a.mask24", torch::zeros({3}, torch::kUInt8)},
                     {"a.tile_map", torch::ones({1, 1}, torch::kUInt8)}},
                    {{"format", "patchllm-mask"}, {"patchllm_format_version", "1"}, {"pattern", "2:4"},
                     {"tile_size", "128x128"}, {"base_model_fingerprint", ""}});
  e = error_of([&] { mask_load(tmp + "/s.safetensors"); });
  EXPECT_NE(e.find("a.mask24: packed mask has 3 bytes, expected 1"), std::string::npos) << e;
  EXPECT_THROW(mask_load(tmp + "/none.safetensors"), InvalidArgument);
}

// Found by fuzz/fuzz_mask: a shape whose element count wraps to 0 passed the byte-count check against an empty
// packed tensor and reached torch as a c10::Error; a huge tile side overflowed the grid arithmetic; tile scores of
// the wrong shape were accepted.
TEST(Mask, OverflowingShapesTileSizesAndScoreShapesAreFormatErrors) {
  std::string tmp = test::temp_dir("mask_fuzz");
  const std::map<std::string, std::string> meta = {{"format", "patchllm-mask"},
                                                   {"patchllm_format_version", "1"},
                                                   {"pattern", "unstructured"},
                                                   {"tile_size", "128x128"},
                                                   {"base_model_fingerprint", ""}};
  safetensors_write(tmp + "/o.safetensors",
                    {{"a.shape", torch::tensor({int64_t{1} << 40, int64_t{1} << 40}, torch::kInt64)},
                     {"a.mask", torch::zeros({0}, torch::kUInt8)}},
                    meta);
  std::string e = error_of([&] { mask_load(tmp + "/o.safetensors"); });
  EXPECT_NE(e.find("overflows"), std::string::npos) << e;
  EXPECT_NE(e.find("o.safetensors"), std::string::npos) << e;
  auto big_tile = meta;
  big_tile["tile_size"] = "9223372036854775807x128";
  safetensors_write(tmp + "/t.safetensors",
                    {{"a.shape", torch::tensor({2, 4}, torch::kInt64)}, {"a.mask", torch::ones({1}, torch::kUInt8)}},
                    big_tile);
  e = error_of([&] { mask_load(tmp + "/t.safetensors"); });
  EXPECT_NE(e.find("bad tile_size"), std::string::npos) << e;
  safetensors_write(tmp + "/s.safetensors",
                    {{"a.shape", torch::tensor({2, 4}, torch::kInt64)}, {"a.mask", torch::ones({1}, torch::kUInt8)},
                     {"a.tile_scores", torch::ones({2, 2})}},
                    meta);
  e = error_of([&] { mask_load(tmp + "/s.safetensors"); });
  EXPECT_NE(e.find("a.tile_scores is [2, 2], the tile grid is [1, 1]"), std::string::npos) << e;
}

TEST(Mask, ApplyWritesExactPositiveZeros) {
  std::string dir = test::tiny_model_write(test::temp_dir("mask_apply") + "/m", {});
  auto model = Model::load(dir);
  MaskSet m = random_hybrid(dir, 32, 32, 6);
  std::map<std::string, torch::Tensor> before;
  for (auto& [n, slot] : model->linears()) before[n] = (*slot)->weight.clone();
  mask_apply(*model, m);
  for (auto& [n, slot] : model->linears()) {
    const auto& w = (*slot)->weight;
    auto keep = m.masks.at(n).keep;
    EXPECT_TRUE(w.masked_select(keep).equal(before[n].masked_select(keep)));
    auto pruned = w.masked_select(keep.logical_not());
    EXPECT_TRUE((pruned == 0).all().item<bool>());
    EXPECT_FALSE(torch::signbit(pruned).any().item<bool>()) << n;  // random weights: half were negative
  }
}
