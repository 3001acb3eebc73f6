// Shared CLI pieces: the subcommand registry, device/dtype options, JSON output.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "model/model.h"

namespace patchllm::cli {

// Each cmd_*.cc defines one register function; main.cc calls them all.
void register_convert(CLI::App& app);
void register_inspect(CLI::App& app);
void register_generate(CLI::App& app);
void register_eval(CLI::App& app);
void register_prune(CLI::App& app);
void register_export(CLI::App& app);

struct DeviceOptions {
  std::string device = "auto";  // auto | cpu | cuda[:N]
  std::string dtype = "auto";   // auto (fp32 on CPU, bf16 on CUDA) | fp32 | bf16 | fp16
  void add(CLI::App* sub);
  ModelLoadOptions resolve() const;
};

// Writes JSON to `path` atomically ("-" = stdout).
void write_json(const std::string& path, const nlohmann::json& j);
std::string describe(const ModelLoadOptions& o);

}  // namespace patchllm::cli
