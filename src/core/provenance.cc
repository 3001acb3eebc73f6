#include "core/provenance.h"

#include <ctime>

#include "core/file.h"
#include "patchllm_git_hash.h"  // (generated at every build)
#include "patchllm_version.h"

namespace patchllm {
namespace {
std::vector<std::string> g_argv;
}

void provenance_set_argv(int argc, char** argv) { g_argv.assign(argv, argv + argc); }

std::string version_string() { return std::string(PATCHLLM_VERSION) + " (" + PATCHLLM_GIT_HASH + ")"; }

nlohmann::json provenance_json(const std::vector<std::string>& input_files) {
  nlohmann::json j;
  j["tool"] = "patchllm";
  j["version"] = PATCHLLM_VERSION;
  j["git_hash"] = PATCHLLM_GIT_HASH;
  j["libtorch"] = PATCHLLM_TORCH_VERSION;
  j["argv"] = g_argv;
  char buf[64];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  j["date"] = buf;
  nlohmann::json inputs = nlohmann::json::object();
  for (const auto& f : input_files)
    if (file_exists(f)) inputs[f] = sha256_file(f);
  j["inputs"] = inputs;
  return j;
}

}  // namespace patchllm
