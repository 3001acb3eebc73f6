// export --format packed and loading packed hybrid linears (CPU): logits equal the HF export of the same mask loaded
// in bf16, the packed tensors round-trip to the masked weights, eval/generate run on a packed directory, and the
// error paths (tile size, unstructured mask, corrupt or too-new file, dense-only commands) are one line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>

#include "core/error.h"
#include "core/file.h"
#include "export/export.h"
#include "io/safetensors.h"
#include "mask/mask.h"
#include "model/model.h"
#include "model/packed_linear.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace patchllm;

namespace {

// A hybrid mask for every decoder linear of dir: a seeded random tile map (about half 2:4 tiles, at least one of
// each kind per matrix when it has two tiles or more) and magnitude 2:4 inside the 2:4 tiles.
MaskSet hybrid_mask(const std::string& dir, int64_t R, int64_t C, uint64_t seed) {
  Checkpoint ck(dir);
  torch::manual_seed(seed);
  MaskSet ms;
  ms.pattern = "2:4";
  ms.tile_r = R;
  ms.tile_c = C;
  ms.meta["method"] = "test-hybrid";
  for (const auto& [name, shape] : mask_model_shapes(dir)) {
    auto w = ck.load(name).to(torch::kFloat32);
    const int64_t N = shape[0], K = shape[1], RB = (N + R - 1) / R, CT = (K + C - 1) / C;
    auto tm = (torch::rand({RB, CT}) < 0.5).to(torch::kUInt8);
    if (RB * CT > 1) {
      tm.view(-1)[0] = 1;
      tm.view(-1)[RB * CT - 1] = 0;
    }
    auto idx = std::get<1>(w.abs().view({N, K / 4, 4}).topk(2, -1));
    auto keep24 = torch::zeros({N, K / 4, 4}, torch::kBool).scatter_(-1, idx, true).view({N, K});
    auto sparse = tm.to(torch::kBool).repeat_interleave(R, 0).repeat_interleave(C, 1).slice(0, 0, N).slice(1, 0, K);
    LinearMask lm;
    lm.keep = torch::where(sparse, keep24, torch::ones_like(keep24));
    lm.tile_map = tm;
    ms.masks[name] = lm;
  }
  ms.fingerprint = model_fingerprint(dir, &ms.fingerprint_desc);
  return ms;
}

int count_lines(const std::string& s) { return int(std::count(s.begin(), s.end(), '\n')); }

using Tensors = std::map<std::string, torch::Tensor>;
using Meta = std::map<std::string, std::string>;

// Rewrites a safetensors file with one tensor or metadata entry changed.
void rewrite(const std::string& path, const std::function<void(Tensors&, Meta&)>& edit) {
  std::map<std::string, torch::Tensor> t;
  std::map<std::string, std::string> meta;
  {
    SafetensorsFile f(path);
    for (const auto& [n, e] : f.entries()) t[n] = f.load(n);
    meta = f.metadata();
  }
  edit(t, meta);
  safetensors_write(path, t, meta);
}

void copy_dir(const std::string& from, const std::string& to) {
  dir_create(to);
  for (const char* f : {"config.json", "model.safetensors"}) file_write_atomic(to + "/" + f, file_read(from + "/" + f));
}

// torch::linear with the bias added after the GEMM's rounding to the compute dtype, as PackedHybridLinear does.
struct BiasAfterRounding : Linear {
  using Linear::Linear;
  torch::Tensor forward(const torch::Tensor& x) override { return torch::linear(x, weight) + bias; }
};

struct Case {
  const char* name;
  test::TinySpec spec;
  int64_t R, C;
};

class PackedModel : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(PackedModel, LogitsEqualHfExportInBf16AndTensorsRoundTrip) {
  const Case& c = GetParam();
  std::string tmp = test::temp_dir(std::string("packed_") + c.name);
  std::string dir = test::tiny_model_write(tmp + "/m", c.spec);
  file_write_atomic(dir + "/generation_config.json", "{\"bos_token_id\": 1}");
  MaskSet ms = hybrid_mask(dir, c.R, c.C, 7);
  mask_save(tmp + "/masks.safetensors", ms);
  auto r = test::run_cli("-q export -m '" + dir + "' --masks '" + tmp + "/masks.safetensors' -o '" + tmp +
                         "/packed' --format packed");
  ASSERT_EQ(r.code, 0) << r.err;
  r = test::run_cli("-q export -m '" + dir + "' --masks '" + tmp + "/masks.safetensors' -o '" + tmp + "/hf'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(file_exists(tmp + "/packed/config.json"));
  EXPECT_TRUE(file_exists(tmp + "/packed/generation_config.json"));
  for (const auto& e : std::filesystem::directory_iterator(tmp))  // the temp directory was renamed into place
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();

  // The file: packed tensors replace every masked .weight; the rest as stored; header metadata.
  SafetensorsFile pf(tmp + "/packed/model.safetensors");
  Checkpoint base(dir), hf(tmp + "/hf");
  EXPECT_EQ(pf.metadata().at("format"), kPackedFormat);
  EXPECT_EQ(pf.metadata().at("patchllm_format_version"), std::to_string(HYBRID_FORMAT_VERSION));
  EXPECT_NE(pf.metadata().at("patchllm_provenance").find("export"), std::string::npos);
  EXPECT_EQ(pf.metadata().at("patchllm_base_model_fingerprint"), ms.fingerprint);
  for (const auto& n : base.names()) {
    if (ms.masks.count(n)) {
      std::string p = n.substr(0, n.size() - 7);
      EXPECT_FALSE(pf.has(n)) << n;
      EXPECT_TRUE(pf.has(p + ".hybrid_data") && pf.has(p + ".hybrid_tile_kinds") && pf.has(p + ".hybrid_tile_offsets"))
          << p;
      EXPECT_TRUE(pf.load(p + ".hybrid_tile_kinds").equal(ms.masks.at(n).tile_map)) << p;
      auto g = nlohmann::json::parse(pf.metadata().at(p + ".hybrid_geometry"));
      EXPECT_EQ(g.at("tile_rows").get<int64_t>(), c.R);
      EXPECT_EQ(g.at("tile_cols").get<int64_t>(), c.C);
      EXPECT_EQ(g.at("dtype").get<std::string>(), "BF16");
    } else {
      EXPECT_TRUE(pf.load(n).equal(base.load(n))) << n;  // biases, norms, embeddings unchanged
    }
  }

  // Loaded: every decoder linear is a packed slot whose unpacked weight is the HF export's weight in bf16, bit for bit.
  ModelLoadOptions bf;
  bf.dtype = torch::kBFloat16;
  auto packed = Model::load(tmp + "/packed", bf);
  auto dense = Model::load(tmp + "/hf", bf);
  int sparse_tiles = 0, dense_tiles = 0;
  for (auto& [name, slot] : packed->linears()) {
    auto* pl = dynamic_cast<PackedHybridLinear*>(slot->get());
    ASSERT_NE(pl, nullptr) << name;
    EXPECT_FALSE(pl->weight.defined());
    EXPECT_TRUE(hybrid_unpack(pl->hw).equal(hf.load(name).to(torch::kBFloat16))) << name;
    for (uint8_t k : pl->hw.layout.kinds) (k ? sparse_tiles : dense_tiles)++;
  }
  EXPECT_GT(sparse_tiles, 0);
  EXPECT_GT(dense_tiles, 0);
  EXPECT_EQ(packed->num_parameters(), dense->num_parameters());

  // Logits of the packed model == logits of the HF export, both computed in bf16 (fp32-accumulated GEMMs, one bf16
  // rounding each: only the summation order differs). The hybrid GEMM has no bias epilogue: its bias is added after
  // the bf16 rounding, so with biases the reference adds them the same way (and plain HF is checked loosely).
  torch::manual_seed(1);
  auto ids = torch::randint(0, c.spec.vocab, {2, 24}, torch::kInt64);
  torch::NoGradGuard ng;
  auto lp = packed->forward(ids), ld_hf = dense->forward(ids);
  if (c.spec.bias) {
    for (auto& [name, slot] : dense->linears())
      if ((*slot)->bias.defined()) *slot = std::make_shared<BiasAfterRounding>((*slot)->weight, (*slot)->bias);
    double rel = (lp - ld_hf).abs().mean().item<double>() / ld_hf.abs().mean().item<double>();
    EXPECT_LE(rel, 5e-2) << "packed vs HF with the bias inside the GEMM";
  }
  auto ld = dense->forward(ids);
  ASSERT_TRUE(torch::isfinite(lp).all().item<bool>());
  double scale = ld.abs().max().item<double>(), err = (lp - ld).abs().max().item<double>();
  EXPECT_LE(err, 1e-2 * scale) << "max |packed - hf| " << err << " of max |logit| " << scale;
  double mean_err = (lp - ld).abs().mean().item<double>() / ld.abs().mean().item<double>();
  EXPECT_LE(mean_err, 4e-3);  // 0.5-1.3e-3 with Debian's LibTorch 1.13 (OpenBLAS), 2.5e-3 with PyTorch 2.11's (oneDNN)
  // KV-cache decode through packed slots equals the full forward.
  auto cache = packed->make_cache(2, 24);
  auto l1 = packed->forward(ids.slice(1, 0, 20), &cache);
  auto l2 = packed->forward(ids.slice(1, 20, 24), &cache);
  EXPECT_LE((torch::cat({l1, l2}, 1) - lp).abs().max().item<double>(), 1e-2 * scale);

  // Default CPU load (fp32 compute): packed slots cast to bf16 and back; close to the HF export in fp32.
  auto p32 = Model::load(tmp + "/packed");
  auto d32 = Model::load(tmp + "/hf");
  auto e32 = (p32->forward(ids) - d32->forward(ids)).abs().max().item<double>();
  EXPECT_LE(e32, 3e-2 * scale);

  // eval logits through the CLI on the packed directory equals the library forward.
  safetensors_write(tmp + "/ids.safetensors", {{"input_ids", ids}});
  r = test::run_cli("-q eval logits -m '" + tmp + "/packed' -i '" + tmp + "/ids.safetensors' -o '" + tmp +
                    "/logits.safetensors' --dtype bf16 --device cpu");  // lp is the CPU path; a CUDA build defaults to the GPU
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(SafetensorsFile(tmp + "/logits.safetensors").load("logits").equal(lp));

  // fp16 packing: same structure, F16 geometry, values the fp16 weights.
  r = test::run_cli("-q export -m '" + dir + "' --masks '" + tmp + "/masks.safetensors' -o '" + tmp +
                    "/p16' --format packed --dtype fp16");
  ASSERT_EQ(r.code, 0) << r.err;
  auto m16 = Model::load(tmp + "/p16");
  for (auto& [name, slot] : m16->linears()) {
    auto* pl = dynamic_cast<PackedHybridLinear*>(slot->get());
    ASSERT_NE(pl, nullptr);
    EXPECT_EQ(pl->hw.dtype, torch::kHalf);
    EXPECT_TRUE(hybrid_unpack(pl->hw).equal(hf.load(name).to(torch::kHalf))) << name;
  }
  // --force replaces an existing output; without it the export refuses.
  r = test::run_cli("-q export -m '" + dir + "' --masks '" + tmp + "/masks.safetensors' -o '" + tmp +
                    "/packed' --format packed");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  r = test::run_cli("-q export -m '" + dir + "' --masks '" + tmp + "/masks.safetensors' -o '" + tmp +
                    "/packed' --format packed --force");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(SafetensorsFile(tmp + "/packed/model.safetensors").load("model.norm.weight").equal(base.load("model.norm.weight")));
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PackedModel,
    ::testing::Values(Case{"llama_16x64", {"LlamaForCausalLM", 128, 192, 2, 4, 2, 97, 128}, 16, 64},
                      // Qwen2: q/k/v biases stay .bias, tied embeddings; 32x128 tiles, ragged edges (K = 200).
                      Case{"qwen2_bias_32x128", {"Qwen2ForCausalLM", 128, 200, 2, 4, 2, 97, 128, true, true}, 32, 128},
                      Case{"qwen2_nobias_32x128", {"Qwen2ForCausalLM", 128, 200, 2, 4, 2, 97, 128, true, false}, 32, 128},
                      // The CUDA kernels' 128x128 tiles (CPU reference here), ragged in N and K.
                      Case{"llama_128x128", {"LlamaForCausalLM", 192, 320, 1, 4, 2, 97, 128}, 128, 128}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

TEST(PackedModelErrors, OneLineErrors) {
  std::string tmp = test::temp_dir("packed_err");
  test::TinySpec spec{"LlamaForCausalLM", 128, 192, 1, 4, 2, 97, 128};
  std::string dir = test::tiny_model_write(tmp + "/m", spec);
  auto one_line = [](const test::CliResult& r) {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  };
  // Tile sizes the packer cannot take: columns not a multiple of 64, rows not a multiple of 16.
  for (auto [R, C] : std::vector<std::pair<int64_t, int64_t>>{{16, 32}, {8, 64}}) {
    std::string mf = tmp + "/masks_" + std::to_string(R) + "x" + std::to_string(C) + ".safetensors";
    mask_save(mf, hybrid_mask(dir, R, C, 3));
    auto r = test::run_cli("-q export -m '" + dir + "' --masks '" + mf + "' -o '" + tmp + "/bad' --format packed");
    one_line(r);
    EXPECT_NE(r.err.find(mf), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("cannot be packed"), std::string::npos) << r.err;
    EXPECT_FALSE(file_exists(tmp + "/bad"));
  }
  // An unstructured mask has no tile map to pack.
  {
    MaskSet u = hybrid_mask(dir, 16, 64, 3);
    u.pattern = "unstructured";
    for (auto& [n, lm] : u.masks) lm.tile_map = torch::Tensor();
    mask_save(tmp + "/unstructured.safetensors", u);
    auto r = test::run_cli("-q export -m '" + dir + "' --masks '" + tmp + "/unstructured.safetensors' -o '" + tmp +
                           "/bad' --format packed");
    one_line(r);
    EXPECT_NE(r.err.find("unstructured"), std::string::npos) << r.err;
  }
  // A good packed export to corrupt.
  MaskSet ms = hybrid_mask(dir, 16, 64, 5);
  mask_save(tmp + "/masks.safetensors", ms);
  auto r = test::run_cli("-q export -m '" + dir + "' --masks '" + tmp + "/masks.safetensors' -o '" + tmp +
                         "/p' --format packed");
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_NO_THROW(Model::load(tmp + "/p"));
  safetensors_write(tmp + "/ids.safetensors", {{"input_ids", torch::randint(0, 97, {1, 8}, torch::kInt64)}});
  const std::string q = "model.layers.0.self_attn.q_proj";
  struct Corruption {
    const char* what;
    std::function<void(Tensors&, Meta&)> edit;
  };
  std::vector<Corruption> cs = {
      {"hybrid_tile_offsets",  // a flipped tile kind no longer matches the offsets
       [&](Tensors& t, Meta&) {
         auto k = t[q + ".hybrid_tile_kinds"].clone();
         k.view(-1)[0] = 1 - k.view(-1)[0].item<int>();
         t[q + ".hybrid_tile_kinds"] = k;
       }},
      {"has value 7", [&](Tensors& t, Meta&) { t[q + ".hybrid_tile_kinds"] = t[q + ".hybrid_tile_kinds"].clone().fill_(7); }},
      {"bytes", [&](Tensors& t, Meta&) { t[q + ".hybrid_data"] = t[q + ".hybrid_data"].slice(0, 0, 100).clone(); }},
      {"2:4 metadata",
       [&](Tensors& t, Meta&) {  // tile 0 is 2:4 (hybrid_mask): zero its first metadata byte (nibble 0 is no code)
         auto d = t[q + ".hybrid_data"].clone();
         d[HYBRID_SPARSE_VALUE_BYTES] = 0;
         t[q + ".hybrid_data"] = d;
       }},
      {"geometry", [&](Tensors&, Meta& m) { m[q + ".hybrid_geometry"] = "{\"rows\": 128"; }},
      {"expects", [&](Tensors&, Meta& m) {
         auto g = nlohmann::json::parse(m[q + ".hybrid_geometry"]);
         g["rows"] = 64;
         m[q + ".hybrid_geometry"] = g.dump();
       }},
      {"tile_rows is not a positive integer", [&](Tensors&, Meta& m) {  // float: get<int>() was undefined
         auto g = nlohmann::json::parse(m[q + ".hybrid_geometry"]);
         g["tile_rows"] = 1e30;
         m[q + ".hybrid_geometry"] = g.dump();
       }},
      {"version", [&](Tensors&, Meta& m) { m["patchllm_format_version"] = std::to_string(HYBRID_FORMAT_VERSION + 1); }},
      {"missing tensor", [&](Tensors& t, Meta&) { t.erase(q + ".hybrid_tile_offsets"); }},
  };
  for (const auto& c : cs) {
    std::string bad = tmp + "/corrupt";
    copy_dir(tmp + "/p", bad);
    rewrite(bad + "/model.safetensors", c.edit);
    try {
      Model::load(bad);
      ADD_FAILURE() << c.what << ": loaded a corrupt file";
    } catch (const FormatError& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(bad + "/model.safetensors"), std::string::npos) << m;
      EXPECT_NE(m.find(c.what), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
    auto rr = test::run_cli("-q eval logits -m '" + bad + "' -i '" + tmp + "/ids.safetensors' -o '" + tmp + "/l.st'");
    one_line(rr);
  }
  // A truncated file: the safetensors reader refuses it, naming the file.
  {
    std::string bad = tmp + "/truncated";
    copy_dir(tmp + "/p", bad);
    std::string bytes = file_read(bad + "/model.safetensors");
    file_write_atomic(bad + "/model.safetensors", bytes.substr(0, bytes.size() - 1000));
    auto rr = test::run_cli("-q eval logits -m '" + bad + "' -i '" + tmp + "/ids.safetensors' -o '" + tmp + "/l.st'");
    one_line(rr);
    EXPECT_NE(rr.err.find(bad + "/model.safetensors"), std::string::npos) << rr.err;
  }
  // Commands that need dense weights refuse a packed model in one line.
  r = test::run_cli("-q eval logits -m '" + tmp + "/p' -i '" + tmp + "/ids.safetensors' -o '" + tmp +
                    "/l.st' --masks '" + tmp + "/masks.safetensors'");
  one_line(r);
  EXPECT_NE(r.err.find("packed hybrid model"), std::string::npos) << r.err;
  r = test::run_cli("-q export -m '" + tmp + "/p' --masks '" + tmp + "/masks.safetensors' -o '" + tmp + "/pp'");
  one_line(r);
  EXPECT_NE(r.err.find("packed hybrid model"), std::string::npos) << r.err;
  auto pm = Model::load(tmp + "/p");
  EXPECT_THROW(mask_apply(*pm, ms), InvalidArgument);
  EXPECT_THROW(model_pack_random(*pm, 0.5, 0), InvalidArgument);
  // An unknown launch option of the hybrid kernel is a usage error naming the flag (exit 2); a known one runs.
  r = test::run_cli("-q --hybrid-kernel fast eval logits -m '" + tmp + "/p' -i '" + tmp + "/ids.safetensors' -o '" +
                    tmp + "/l.st'");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("--hybrid-kernel"), std::string::npos) << r.err;
  r = test::run_cli("-q --hybrid-kernel pdl+cluster+pdl eval logits -m '" + tmp + "/p' -i '" + tmp +
                    "/ids.safetensors' -o '" + tmp + "/l.st'");
  EXPECT_EQ(r.code, 2) << r.err;  // an option twice
  // On the CPU: this model's 16x64 tiles are for the reference path (the CUDA kernels need 128x128, a one-line
  // error on a GPU machine, where eval's device would default to CUDA).
  r = test::run_cli("-q --hybrid-kernel cluster+pdl eval logits -m '" + tmp + "/p' -i '" + tmp +
                    "/ids.safetensors' -o '" + tmp + "/l.st' --device cpu");
  EXPECT_EQ(r.code, 0) << r.err;
  // The layer-ops switch likewise: an unknown value is a usage error naming the flag, `reference` runs.
  r = test::run_cli("-q --layer-ops fast eval logits -m '" + tmp + "/p' -i '" + tmp + "/ids.safetensors' -o '" + tmp +
                    "/l.st'");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("--layer-ops"), std::string::npos) << r.err;
  r = test::run_cli("-q --layer-ops reference eval logits -m '" + tmp + "/p' -i '" + tmp + "/ids.safetensors' -o '" +
                    tmp + "/l.st' --device cpu");
  EXPECT_EQ(r.code, 0) << r.err;
}

// model_pack_random (bench --hybrid-f): the fraction of 2:4 tiles and the logits of the packed model against the
// dense model with the same masks applied.
TEST(PackedModel, PackRandomMatchesMaskedDense) {
  std::string tmp = test::temp_dir("packed_random");
  std::string dir = test::tiny_model_write(tmp + "/m", {"LlamaForCausalLM", 256, 384, 1, 4, 2, 97, 128});
  ModelLoadOptions bf;
  bf.dtype = torch::kBFloat16;
  for (double f : {0.0, 0.5, 1.0}) {
    auto m = Model::load(dir, bf);
    double got = model_pack_random(*m, f, 11);
    EXPECT_NEAR(got, f, 0.13) << f;
    auto ref = Model::load(dir, bf);
    auto lin = m->linears(), rl = ref->linears();
    for (size_t i = 0; i < lin.size(); ++i) {
      auto* pl = dynamic_cast<PackedHybridLinear*>(lin[i].second->get());
      ASSERT_NE(pl, nullptr);
      if (f == 0.0) EXPECT_TRUE(hybrid_unpack(pl->hw).equal((*rl[i].second)->weight));
      (*rl[i].second)->weight = hybrid_unpack(pl->hw);
    }
    torch::NoGradGuard ng;
    auto ids = torch::randint(0, 97, {1, 16}, torch::kInt64);
    auto a = m->forward(ids), b = ref->forward(ids);
    EXPECT_LE((a - b).abs().max().item<double>(), 1e-2 * b.abs().max().item<double>()) << f;
  }
}

// model_add_prefill_images (--hybrid-kernel sharex): an image on exactly the packed linears the forward runs (a
// current fused group instead of its parts; a dense slot none), each the permutation of that linear's own blob.
TEST(PackedModel, PrefillImagesOnTheLinearsTheForwardRuns) {
  std::string tmp = test::temp_dir("packed_images");
  std::string dir = test::tiny_model_write(tmp + "/m", {"LlamaForCausalLM", 256, 384, 2, 4, 2, 97, 128});
  ModelLoadOptions bf;
  bf.dtype = torch::kBFloat16;
  auto m = Model::load(dir, bf);
  model_pack_random(*m, 0.5, 3);
  ASSERT_EQ(model_fuse_projections(*m), 4);
  // Layer 1's v dense: its q|k|v runs unfused, so q and k get their own images and v none.
  auto& L1 = m->layers[1];
  L1.v = std::make_shared<Linear>(hybrid_unpack(dynamic_cast<PackedHybridLinear*>(L1.v.get())->hw), torch::Tensor());
  auto image = [](const LinearPtr& l) { return dynamic_cast<PackedHybridLinear&>(*l).hw.prefill_image; };
  EXPECT_EQ(model_add_prefill_images(*m), 4 + 5);  // layer 0: qkv, gate_up, o, down; layer 1: q, k, gate_up, o, down
  EXPECT_EQ(model_add_prefill_images(*m), 0);      // built once
  DecoderLayer& L0 = m->layers[0];
  for (const LinearPtr* l : {&L0.qkv.linear, &L0.gate_up.linear, &L0.o, &L0.down, &L1.q, &L1.k, &L1.gate_up.linear}) {
    const HybridWeight& hw = dynamic_cast<PackedHybridLinear&>(**l).hw;
    ASSERT_TRUE(hw.prefill_image.defined());
    std::vector<uint8_t> want(size_t(hw.data.numel()));
    hybrid_prefill_image_raw(hw.data.data_ptr<uint8_t>(), hw.layout, want.data());
    EXPECT_EQ(std::memcmp(want.data(), hw.prefill_image.data_ptr<uint8_t>(), want.size()), 0);
  }
  for (const LinearPtr* l : {&L0.q, &L0.k, &L0.v, &L0.gate, &L0.up}) EXPECT_FALSE(image(*l).defined());
  EXPECT_EQ(dynamic_cast<PackedHybridLinear*>(L1.v.get()), nullptr);
}

TEST(PackedModel, Stories260KGenerateAndPpl) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string data = test::shared_dir() + "/data/tinystories";
  std::string tmp = test::temp_dir("packed_s260k");
  std::string hf = test::stories260k_hf(shared);
  ASSERT_FALSE(hf.empty());
  mask_save(tmp + "/masks.safetensors", hybrid_mask(hf, 16, 64, 9));  // K = 172: ragged last column tile
  auto r = test::run_cli("-q export -m '" + hf + "' --masks '" + tmp + "/masks.safetensors' -o '" + tmp +
                         "/packed' --format packed");
  ASSERT_EQ(r.code, 0) << r.err;
  r = test::run_cli("-q export -m '" + hf + "' --masks '" + tmp + "/masks.safetensors' -o '" + tmp + "/hf'");
  ASSERT_EQ(r.code, 0) << r.err;
  auto ppl = [&](const std::string& m) {
    auto rr = test::run_cli("-q eval ppl -m '" + m + "' -f '" + data + "/valid.txt' -c 128 --chunks 2 --dtype bf16");
    EXPECT_EQ(rr.code, 0) << rr.err;
    return rr.code == 0 ? std::stod(rr.out) : -1.0;
  };
  double pp = ppl(tmp + "/packed"), ph = ppl(tmp + "/hf");
  EXPECT_GT(pp, 1.0);
  EXPECT_NEAR(pp, ph, 2e-3 * ph);
  r = test::run_cli("-q generate -m '" + tmp + "/packed' -p 'Once upon a time' -n 12 --temp 0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("Once upon a time"), std::string::npos) << r.out;
  EXPECT_GT(r.out.size(), std::string("Once upon a time").size());
  r = test::run_cli("-q convert --to gguf -m '" + tmp + "/packed' -o '" + tmp + "/p.gguf'");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("packed hybrid model"), std::string::npos) << r.err;
}

// model_fuse_projections: q|k|v and gate|up as one linear per layer. Logits equal the unfused model's (fp32 dense to
// 1e-5; packed, whose reference GEMM rounds to bf16, to bf16 noise plus a per-linear check), the parts' weights
// or blobs are views into the fused tensor, an in-place change of a part is seen, and a slot replaced after fusion
// makes that layer run unfused.
namespace {

struct FuseCase {
  const char* name;
  bool packed;
  int family;  // 0 LLaMA (GQA, no bias), 1 Qwen2 (q/k/v bias, tied), 2 Gemma 3 (tests/data/gemma3-tiny)
};

class FusedModel : public ::testing::TestWithParam<FuseCase> {};

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

// True when t's bytes lie inside whole's.
bool inside(const torch::Tensor& t, const torch::Tensor& whole) {
  auto p = reinterpret_cast<uintptr_t>(t.data_ptr()), w = reinterpret_cast<uintptr_t>(whole.data_ptr());
  return p >= w && p + t.nbytes() <= w + whole.nbytes();
}

}  // namespace

TEST_P(FusedModel, LogitsEqualUnfusedAndMemoryIsShared) {
  const FuseCase& c = GetParam();
  std::string dir;
  if (c.family == 2) {
    dir = test::source_dir() + "/tests/data/gemma3-tiny";
  } else {
    test::TinySpec s;
    if (c.family == 1) s = test::TinySpec{"Qwen2ForCausalLM", 64, 96, 2, 4, 2, 97, 128, true, true};
    dir = test::tiny_model_write(test::temp_dir(std::string("fuse_") + c.name), s);
  }
  auto load = [&] {
    auto m = Model::load(dir);
    if (c.packed) model_pack_random(*m, 0.5, 5, torch::kBFloat16, 16, 64);  // CPU reference path: 16x64 tiles
    return m;
  };
  auto ref = load(), m = load();
  const int64_t layers = int64_t(m->layers.size());
  EXPECT_EQ(model_fuse_projections(*m), 2 * layers);
  EXPECT_EQ(model_fuse_projections(*m), 2 * layers);  // idempotent: the fused linears are kept
  for (auto& L : m->layers) {
    ASSERT_TRUE(L.qkv.current({&L.q, &L.k, &L.v}));
    ASSERT_TRUE(L.gate_up.current({&L.gate, &L.up}));
    EXPECT_EQ(L.qkv.linear->out_features(), L.q->out_features() + L.k->out_features() + L.v->out_features());
    EXPECT_EQ(L.gate_up.linear->out_features(), 2 * L.up->out_features());
    for (auto [f, part] : std::vector<std::pair<FusedLinear*, Linear*>>{
             {&L.qkv, L.q.get()}, {&L.qkv, L.k.get()}, {&L.qkv, L.v.get()}, {&L.gate_up, L.up.get()}}) {
      if (c.packed) {
        auto* fp = dynamic_cast<PackedHybridLinear*>(f->linear.get());
        auto* pp = dynamic_cast<PackedHybridLinear*>(part);
        ASSERT_TRUE(fp && pp);
        EXPECT_TRUE(inside(pp->hw.data, fp->hw.data));
        EXPECT_EQ(reinterpret_cast<uintptr_t>(pp->hw.data.data_ptr()) % 16, 0u);
        EXPECT_EQ(fp->hw.data.numel(), fp->hw.layout.offsets.back());
      } else {
        EXPECT_TRUE(inside(part->weight, f->linear->weight));
      }
      if (part->bias.defined()) EXPECT_TRUE(inside(part->bias, f->linear->bias));
    }
  }
  if (c.packed)  // the fused blob unpacks to the parts' weights stacked
    for (auto& L : m->layers) {
      auto* fq = dynamic_cast<PackedHybridLinear*>(L.qkv.linear.get());
      auto parts = torch::cat({hybrid_unpack(dynamic_cast<PackedHybridLinear*>(L.q.get())->hw),
                               hybrid_unpack(dynamic_cast<PackedHybridLinear*>(L.k.get())->hw),
                               hybrid_unpack(dynamic_cast<PackedHybridLinear*>(L.v.get())->hw)});
      EXPECT_TRUE(hybrid_unpack(fq->hw).equal(parts));
    }
  if (c.family == 1) EXPECT_TRUE(m->layers[0].qkv.linear->bias.defined());

  torch::NoGradGuard ng;
  // Packed parts run the bf16 reference GEMM, whose fp32 sums are rounded to bf16: the fused GEMM (another N, so
  // another BLAS blocking) may land one bf16 ulp (2^-8) away on a few outputs, which the layers carry to the logits.
  // So packed logits get a bf16 tolerance, and each fused packed linear is also checked against its parts directly
  // (within one ulp per output, where a wrong offset or row order would be off by O(1)).
  const double tol = c.packed ? 3e-2 : 1e-5;  // fp32: another N, another BLAS summation order
  if (c.packed)
    for (auto& L : m->layers) {
      auto x = torch::randn({3, 5, L.qkv.linear->in_features()});
      auto fused = L.qkv.forward(x);
      std::vector<Linear*> parts = {L.q.get(), L.k.get(), L.v.get()};
      for (size_t i = 0; i < parts.size(); ++i) {
        auto want = parts[i]->forward(x);
        EXPECT_TRUE(torch::allclose(fused[i], want, 1.0 / 128, 1e-6)) << "part " << i;
      }
      auto gu = L.gate_up.forward(x);
      EXPECT_TRUE(torch::allclose(gu[0], L.gate->forward(x), 1.0 / 128, 1e-6));
      EXPECT_TRUE(torch::allclose(gu[1], L.up->forward(x), 1.0 / 128, 1e-6));
    }
  torch::manual_seed(3);
  auto ids = torch::randint(0, m->config.vocab_size, {2, 12}, torch::kInt64);
  auto lref = ref->forward(ids);
  auto l = m->forward(ids);
  EXPECT_LE(rel_diff(l, lref), tol);
  // KV-cache decode through the fused linears, against the unfused model decoding the same chunks.
  auto cache = m->make_cache(2, 12), rcache = ref->make_cache(2, 12);
  auto l1 = m->forward(ids.slice(1, 0, 9), &cache), l2 = m->forward(ids.slice(1, 9, 12), &cache);
  auto r1 = ref->forward(ids.slice(1, 0, 9), &rcache), r2 = ref->forward(ids.slice(1, 9, 12), &rcache);
  EXPECT_LE(rel_diff(torch::cat({l1, l2}, 1), torch::cat({r1, r2}, 1)), std::max(tol, 1e-5));

  // A part changed in place (dense: its weight is a view) changes the fused linear too. Only half of v's rows are
  // scaled: Gemma 3's norms (QK-norm, post-attention norm) would normalise a uniformly scaled q, k or v away.
  auto half = [](const torch::Tensor& w) { return w.narrow(0, 0, w.size(0) / 2); };
  if (!c.packed) {
    half(m->layers[0].v->weight).mul_(1.5);
    half(ref->layers[0].v->weight).mul_(1.5);
    auto l3 = m->forward(ids), r3 = ref->forward(ids);
    EXPECT_GT(rel_diff(l3, lref), 1e-3);
    EXPECT_LE(rel_diff(l3, r3), tol);
    lref = r3;
  }
  // A replaced slot: layer 0's v becomes a plain Linear with half its rows scaled; that layer's q|k|v runs unfused.
  auto scaled_v = [&](Model& mm) {
    auto& v = mm.layers[0].v;
    torch::Tensor w = c.packed ? hybrid_unpack(dynamic_cast<PackedHybridLinear*>(v.get())->hw).to(torch::kFloat32)
                               : v->weight * 1.0;
    w = w.clone();
    half(w).mul_(1.25);
    v = std::make_shared<Linear>(w, v->bias.defined() ? v->bias.clone() : torch::Tensor());
  };
  scaled_v(*m);
  scaled_v(*ref);
  auto& L0 = m->layers[0];
  EXPECT_FALSE(L0.qkv.current({&L0.q, &L0.k, &L0.v}));
  EXPECT_TRUE(L0.gate_up.current({&L0.gate, &L0.up}));
  auto l4 = m->forward(ids), r4 = ref->forward(ids);
  EXPECT_GT(rel_diff(l4, lref), 1e-3);   // the scaled v is used ...
  EXPECT_LE(rel_diff(l4, r4), tol);      // ... as in the unfused model
  // Re-fusing: a dense v among packed q, k (mixed) stays unfused; an all-dense layer fuses again.
  EXPECT_EQ(model_fuse_projections(*m), c.packed ? 2 * layers - 1 : 2 * layers);
  EXPECT_LE(rel_diff(m->forward(ids), r4), tol);
  // A replaced weight tensor (pruning assigns slot->weight) is detected as well.
  if (!c.packed) {
    auto& L1 = m->layers[layers - 1];
    L1.up->weight = L1.up->weight * 0.5;
    ref->layers[layers - 1].up->weight = ref->layers[layers - 1].up->weight * 0.5;
    EXPECT_FALSE(L1.gate_up.current({&L1.gate, &L1.up}));
    EXPECT_LE(rel_diff(m->forward(ids), ref->forward(ids)), tol);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, FusedModel,
                         ::testing::Values(FuseCase{"llama_dense", false, 0}, FuseCase{"llama_packed", true, 0},
                                           FuseCase{"qwen2_bias_dense", false, 1},
                                           FuseCase{"qwen2_bias_packed", true, 1}, FuseCase{"gemma3_dense", false, 2},
                                           FuseCase{"gemma3_packed", true, 2}),
                         [](const ::testing::TestParamInfo<FuseCase>& i) { return std::string(i.param.name); });
