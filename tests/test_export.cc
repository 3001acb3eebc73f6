// Export round trip (masked model == exported model, exact +0.0 zeros, provenance, --force) and the CLI pipeline
// on the real stories260K: prune -> eval ppl --masks -> export -> inspect --masks, plus its error paths.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/file.h"
#include "export/export.h"
#include "io/safetensors.h"
#include "mask/mask.h"
#include "model/model.h"
#include "prune/prune.h"
#include "test_util.h"
#include "tiny_model.h"

using namespace patchllm;

TEST(Export, ReloadGivesTheMaskedModelsLogits) {
  std::string tmp = test::temp_dir("export_rt");
  std::string dir = test::tiny_model_write(tmp + "/m", {});
  file_write_atomic(dir + "/generation_config.json", "{\"bos_token_id\": 1}");
  auto model = Model::load(dir);
  torch::manual_seed(0);
  auto windows = torch::randint(0, 97, {4, 16}, torch::kInt64);
  PruneOptions o;
  o.method = "wanda";
  MaskSet ms = prune_model(*model, windows, o);  // model now masked
  ms.fingerprint = model_fingerprint(dir, &ms.fingerprint_desc);
  ExportOptions eo;
  eo.provenance = {{"tool", "patchllm"}};
  export_hf(dir, tmp + "/out", ms, {}, eo);
  EXPECT_TRUE(file_exists(tmp + "/out/generation_config.json"));
  auto exported = Model::load(tmp + "/out");
  auto ids = torch::randint(0, 97, {2, 12}, torch::kInt64);
  torch::NoGradGuard ng;
  EXPECT_TRUE(exported->forward(ids).equal(model->forward(ids)));
  // A fresh base model with the mask applied gives the same logits too.
  auto base = Model::load(dir);
  mask_apply(*base, ms);
  EXPECT_TRUE(base->forward(ids).equal(exported->forward(ids)));
  SafetensorsFile f(tmp + "/out/model.safetensors");
  EXPECT_NE(f.metadata().at("patchllm_provenance").find("patchllm"), std::string::npos);
  for (const auto& [name, lm] : ms.masks) {
    auto w = f.load(name);
    auto pruned = w.masked_select(lm.keep.logical_not());
    EXPECT_TRUE((pruned == 0).all().item<bool>());
    EXPECT_FALSE(torch::signbit(pruned).any().item<bool>()) << name;
  }
  Checkpoint c0(dir);
  EXPECT_TRUE(f.load("model.embed_tokens.weight").equal(c0.load("model.embed_tokens.weight")));
  EXPECT_THROW(export_hf(dir, tmp + "/out", ms, {}, eo), InvalidArgument);  // exists, no force
  eo.force = true;
  EXPECT_NO_THROW(export_hf(dir, tmp + "/out", ms, {}, eo));
  EXPECT_THROW(export_hf(dir, dir, ms, {}, eo), InvalidArgument);  // never into the input
}

TEST(Export, CliPipelineOnStories260K) {
  PATCHLLM_REQUIRE_SHARED(shared, "models/stories260K");
  std::string data = test::shared_dir() + "/data/tinystories";
  std::string tmp = test::temp_dir("export_cli");
  std::string hf = test::stories260k_hf(shared);
  ASSERT_FALSE(hf.empty());
  test::CliResult r;
  r = test::run_cli("prune -m '" + hf + "' --method sparsegpt --pattern 2:4 --tile-scores --tile 32x32 -f '" + data +
                    "/train.txt' --nsamples 4 --seqlen 64 -o '" + tmp + "/p'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(file_exists(tmp + "/p/masks.safetensors"));
  EXPECT_TRUE(file_exists(tmp + "/p/prune_report.json"));
  EXPECT_TRUE(file_exists(tmp + "/p/sparsegpt-hf/model.safetensors"));
  MaskSet ms = mask_load(tmp + "/p/masks.safetensors");
  EXPECT_DOUBLE_EQ(ms.sparsity(), 0.5);
  EXPECT_EQ(ms.meta.at("calibration_sha256"), sha256_file(data + "/train.txt"));
  EXPECT_TRUE(ms.masks.begin()->second.tile_scores.defined());
  r = test::run_cli("eval ppl -m '" + hf + "' -f '" + data + "/valid.txt' -c 256 --chunks 2 --masks '" + tmp +
                    "/p/masks.safetensors'");
  ASSERT_EQ(r.code, 0) << r.err;
  double ppl_masked = std::stod(r.out);
  r = test::run_cli("export -m '" + hf + "' --masks '" + tmp + "/p/masks.safetensors' -o '" + tmp + "/e'");
  ASSERT_EQ(r.code, 0) << r.err;
  r = test::run_cli("eval ppl -m '" + tmp + "/e' -f '" + data + "/valid.txt' -c 256 --chunks 2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_DOUBLE_EQ(std::stod(r.out), ppl_masked);
  r = test::run_cli("export -m '" + hf + "' --masks '" + tmp + "/p/masks.safetensors' -o '" + tmp + "/e'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  // npz export and import through every path that reads masks.
  r = test::run_cli("export -m '" + hf + "' --masks '" + tmp + "/p/masks.safetensors' --format maskllm-npz -o '" + tmp +
                    "/n.npz'");
  ASSERT_EQ(r.code, 0) << r.err;
  r = test::run_cli("eval ppl -m '" + hf + "' -f '" + data + "/valid.txt' -c 256 --chunks 2 --masks '" + tmp +
                    "/n.npz'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_DOUBLE_EQ(std::stod(r.out), ppl_masked);
  r = test::run_cli("prune -m '" + hf + "' --method maskllm-npz --from '" + tmp + "/n.npz' -o '" + tmp + "/q'");
  ASSERT_EQ(r.code, 0) << r.err;
  MaskSet mq = mask_load(tmp + "/q/masks.safetensors");
  for (const auto& [n, lm] : ms.masks) EXPECT_TRUE(mq.masks.at(n).keep.equal(lm.keep)) << n;
  // --no-weights: the same mask, and no copy of the model with SparseGPT's updated weights.
  r = test::run_cli("prune -m '" + hf + "' --method sparsegpt --pattern 2:4 -f '" + data +
                    "/train.txt' --nsamples 4 --seqlen 64 --no-weights -o '" + tmp + "/nw'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(file_exists(tmp + "/nw/sparsegpt-hf/model.safetensors"));
  MaskSet mw = mask_load(tmp + "/nw/masks.safetensors");
  for (const auto& [n, lm] : ms.masks) EXPECT_TRUE(mw.masks.at(n).keep.equal(lm.keep)) << n;
  r = test::run_cli("inspect --masks '" + tmp + "/p/masks.safetensors' -m '" + hf + "' --svg '" + tmp + "/t.svg'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("dense-tile fraction 0.0000"), std::string::npos) << r.out;
  EXPECT_NE(file_read(tmp + "/t.svg").find("<svg"), std::string::npos);
  // The mask on the exported (pruned) model: a different fingerprint, one line.
  r = test::run_cli("eval ppl -m '" + tmp + "/e' -f '" + data + "/valid.txt' --masks '" + tmp +
                    "/p/masks.safetensors'");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("error: mask was made for another model"), std::string::npos) << r.err;
}
