// Shared CLI pieces: the subcommand registry, device/dtype options, JSON output.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

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

// "\\n" and "\\t" escapes in a command-line string.
std::string unescape(const std::string& s);
// Text -> ids: the whole text with BOS once (sep empty), or documents split on sep, each with BOS, concatenated.
std::vector<int> tokenize_documents(const Tokenizer& tok, const std::string& text, const std::string& sep);
// "128" or "128x64" -> (rows, cols); InvalidArgument naming the flag otherwise.
std::pair<int64_t, int64_t> parse_tile(const std::string& s, const std::string& flag = "--tile");

// Provenance inputs of a model run: config.json, the mask file (if any), the checkpoint's weight files.
void append_model_inputs(std::vector<std::string>& inputs, const std::string& dir, const std::string& masks = "");
// The partial file of a resumable job whose results go to `out`: out + ".partial", or "" when out is "" or "-" (nothing
// kept). InvalidArgument when --resume or --stop-after (which must be >= 0) have no file to keep it beside; `flag`
// names the output option in that message.
std::string partial_path(const std::string& out, bool resume, int64_t stop_after, const std::string& flag);
// Writes JSON to `path` atomically ("-" = stdout).
void write_json(const std::string& path, const nlohmann::json& j);
std::string describe(const ModelLoadOptions& o);
// With --hybrid-kernel sharex on a CUDA model, after fusion: the prefill images of its packed linears
// (model_add_prefill_images), so the sharex prefill kernel reads them by descriptor; logs what it built.
void add_prefill_images_for_sharex(Model& model, const ModelLoadOptions& o);

}  // namespace patchllm::cli
