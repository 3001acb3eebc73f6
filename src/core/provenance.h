// Provenance block embedded in every JSON output and artifact: version, git hash, LibTorch, argv, inputs' sha256.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace patchllm {

void provenance_set_argv(int argc, char** argv);  // called once by the CLI
// {"tool":"patchllm","version","git_hash","libtorch","cuda","argv","date", "inputs": {path: sha256}}
nlohmann::json provenance_json(const std::vector<std::string>& input_files = {});
std::string version_string();  // "0.1.0 (abc123)"

}  // namespace patchllm
