// Real GGUF models (scripts/get-models.sh puts them in models/): every tensor dequantised by patchllm must hash the
// same as gguf-py's dequantisation (tools/gguf_reference_hashes.py writes FILE.gguf.ref.json beside each file).
// Skips when no model with a reference file is present: CI does not download models.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "core/log.h"
#include "gguf/gguf.h"
#include "test_util.h"

namespace patchllm {
namespace {

// $PATCHLLM_GGUF_MODELS (colon-separated files), else models/*.gguf in the checkout; only those with a .ref.json.
std::vector<std::string> model_files() {
  std::vector<std::string> files;
  if (const char* env = std::getenv("PATCHLLM_GGUF_MODELS")) {
    std::string s = env;
    size_t start = 0;
    while (start <= s.size()) {
      size_t end = s.find(':', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) files.push_back(s.substr(start, end - start));
      start = end + 1;
    }
  } else {
    std::filesystem::path dir = test::source_dir() + "/models";
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.path().extension() == ".gguf") files.push_back(e.path().string());
  }
  std::vector<std::string> with_ref;
  for (const auto& f : files)
    if (file_exists(f + ".ref.json")) with_ref.push_back(f);
  std::sort(with_ref.begin(), with_ref.end());
  return with_ref;
}

TEST(GgufModels, EveryTensorMatchesGgufPy) {
  std::vector<std::string> files = model_files();
  if (files.empty())
    GTEST_SKIP() << "no models/*.gguf with a .ref.json (run scripts/get-models.sh, or set PATCHLLM_GGUF_MODELS)";
  for (const auto& path : files) {
    SCOPED_TRACE(path);
    double t0 = now_seconds();
    nlohmann::json ref = nlohmann::json::parse(file_read(path + ".ref.json"));
    GgufFile f(path);
    ASSERT_EQ(f.tensors().size(), ref["tensors"].size());
    std::map<std::string, int> by_type;
    int64_t n_elements = 0;
    for (const auto& t : f.tensors()) {
      SCOPED_TRACE(t.name);
      ASSERT_TRUE(ref["tensors"].contains(t.name));
      const auto& r = ref["tensors"][t.name];
      EXPECT_EQ(r["type"].get<std::string>(), gguf_ggml_type_name(t.type));
      EXPECT_EQ(r["shape"].get<std::vector<int64_t>>(), t.shape());
      if (r.value("unsupported", false)) continue;
      std::vector<float> v = f.dequantize(t);
      EXPECT_EQ(sha256_hex(v.data(), v.size() * sizeof(float)), r["sha256"].get<std::string>());
      ++by_type[gguf_ggml_type_name(t.type)];
      n_elements += t.n_elements;
    }
    std::string types;
    for (const auto& kv : by_type) types += str(" ", kv.first, ":", kv.second);
    std::cout << path << ": " << f.tensors().size() << " tensors," << types << ", " << n_elements
              << " elements bit-exact with gguf-py in " << now_seconds() - t0 << " s\n";
  }
}

}  // namespace
}  // namespace patchllm
