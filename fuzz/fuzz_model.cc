// A model directory with one file fuzzed: built three times, with PATCHLLM_FUZZ_FILE "config.json" (fuzz_model_config),
// "model.safetensors" (fuzz_model_weights) and "model.safetensors.index.json" (fuzz_model_index: a sharded
// checkpoint's index, which the loader prefers to the single file beside it). The other files are links to those of
// PATCHLLM_FUZZ_MODEL (tools/fuzz.sh passes stories260K converted, dense or exported packed). What the loader
// accepts must run a forward pass.
#include <dirent.h>

#include <climits>
#include <cstdlib>

#include "core/file.h"
#include "fuzz_util.h"
#include "model/model.h"

namespace {

std::string model_dir() {
  const char* m = patchllm::fuzz::required_env("PATCHLLM_FUZZ_MODEL", "an HF model directory");
  char abs[PATH_MAX];  // the links live elsewhere, so they must hold absolute targets
  if (!realpath(m, abs)) {
    std::fprintf(stderr, "fuzz_model: PATCHLLM_FUZZ_MODEL=%s: no such directory\n", m);
    std::exit(2);
  }
  const std::string d = patchllm::fuzz::temp_dir() + "/model";
  patchllm::dir_create(d);
  DIR* dir = opendir(abs);
  if (!dir) std::abort();
  while (dirent* e = readdir(dir)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || name == PATCHLLM_FUZZ_FILE) continue;
    const std::string link = d + "/" + name;
    std::remove(link.c_str());
    if (symlink((std::string(abs) + "/" + name).c_str(), link.c_str()) != 0) std::abort();
  }
  closedir(dir);
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t n) {
  static const std::string dir = model_dir();
  patchllm::fuzz::write_input(data, n, std::string("model/") + PATCHLLM_FUZZ_FILE);
  PATCHLLM_FUZZ_EXPECT_ERRORS({
    auto model = patchllm::Model::load(dir);
    const int64_t v = model->config.vocab_size;
    auto tokens = torch::tensor({int64_t{1}, v > 2 ? v - 1 : int64_t{0}, int64_t{0}}).view({1, 3});
    auto logits = model->forward(tokens);
    if (logits.size(-1) != v) std::abort();
  });
  return 0;
}
