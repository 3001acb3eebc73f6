#include "cli/common.h"

#include <iostream>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "io/safetensors.h"
#include "model/packed_linear.h"
#include "ops/hybrid_linear.h"

namespace patchllm::cli {

void append_model_inputs(std::vector<std::string>& inputs, const std::string& dir, const std::string& masks) {
  inputs.push_back(path_join(dir, "config.json"));
  if (!masks.empty()) inputs.push_back(masks);
  Checkpoint ckpt(dir);
  for (const auto& f : ckpt.files()) inputs.push_back(f);
}

std::string partial_path(const std::string& out, bool resume, int64_t stop_after, const std::string& flag) {
  PATCHLLM_CHECK(stop_after >= 0, InvalidArgument, "--stop-after must be >= 0, got ", stop_after);
  const bool file = !out.empty() && out != "-";
  PATCHLLM_CHECK(file || (!resume && stop_after == 0), InvalidArgument,
                 "--resume and --stop-after keep results in a .partial file beside the output: give ", flag,
                 " a file, not '-'");
  return file ? out + ".partial" : "";
}

void DeviceOptions::add(CLI::App* sub) {
  sub->add_option("--device", device, "auto | cpu | cuda[:N]")->capture_default_str()->envname("PATCHLLM_ARG_DEVICE");
  sub->add_option("--dtype", dtype, "compute dtype: auto (fp32 on CPU, bf16 on CUDA) | fp32 | bf16 | fp16")
      ->capture_default_str()
      ->envname("PATCHLLM_ARG_DTYPE");
}

ModelLoadOptions DeviceOptions::resolve() const {
  ModelLoadOptions o;
  if (device == "auto") {
    o.device = torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  } else {
    try {
      o.device = torch::Device(device);
    } catch (const std::exception&) {
      throw InvalidArgument(str("--device: unknown device '", device, "' (auto, cpu, cuda[:N])"));
    }
    PATCHLLM_CHECK(!o.device.is_cuda() || torch::cuda::is_available(), InvalidArgument, "--device ", device,
                   ": CUDA is not available in this build/machine");
  }
  if (dtype == "auto")
    o.dtype = o.device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  else if (dtype == "fp32" || dtype == "float32")
    o.dtype = torch::kFloat32;
  else if (dtype == "bf16" || dtype == "bfloat16")
    o.dtype = torch::kBFloat16;
  else if (dtype == "fp16" || dtype == "float16")
    o.dtype = torch::kFloat16;
  else
    throw InvalidArgument(str("--dtype: unknown dtype '", dtype, "' (auto, fp32, bf16, fp16)"));
  return o;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char c = s[++i];
      out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<int> tokenize_documents(const Tokenizer& tok, const std::string& text, const std::string& sep) {
  if (sep.empty()) return tok.encode(text, true);
  std::vector<int> ids;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find(sep, pos);
    if (end == std::string::npos) end = text.size();
    std::string doc = text.substr(pos, end - pos);
    if (doc.find_first_not_of(" \n\t\r") != std::string::npos) {
      auto d = tok.encode(doc, true);
      ids.insert(ids.end(), d.begin(), d.end());
    }
    pos = end + sep.size();
  }
  return ids;
}

std::pair<int64_t, int64_t> parse_tile(const std::string& s, const std::string& flag) {
  auto x = s.find('x');
  try {
    size_t used = 0;
    if (x == std::string::npos) {
      int64_t v = std::stoll(s, &used);
      if (used == s.size()) return {v, v};
    } else {
      int64_t r = std::stoll(s.substr(0, x), &used);
      size_t used2 = 0;
      int64_t c = std::stoll(s.substr(x + 1), &used2);
      if (used == x && used2 == s.size() - x - 1) return {r, c};
    }
  } catch (const std::exception&) {
  }
  throw InvalidArgument(str(flag, ": cannot parse '", s, "' (use 128 or 128x128)"));
}

std::string describe(const ModelLoadOptions& o) { return str(o.device.str(), " ", c10::toString(o.dtype)); }

void add_prefill_images_for_sharex(Model& model, const ModelLoadOptions& o) {
  if (!o.device.is_cuda() || !hybrid_kernel_options().prefill_sharex) return;
  const int64_t n = model_add_prefill_images(model);
  if (n > 0) log_info("sharex: prefill images of ", n, " packed linears (as many bytes again as their weights)");
}

void write_json(const std::string& path, const nlohmann::json& j) {
  if (path == "-") {
    std::cout << j.dump(2) << std::endl;
    return;
  }
  file_write_atomic(path, j.dump(2) + "\n");
}

}  // namespace patchllm::cli
