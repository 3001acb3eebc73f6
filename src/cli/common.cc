#include "cli/common.h"

#include <iostream>

#include "core/error.h"
#include "core/file.h"

namespace patchllm::cli {

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
    PATCHLLM_CHECK(!o.device.is_cuda() || torch::cuda::is_available(), InvalidArgument,
                   "--device ", device, ": CUDA is not available in this build/machine");
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

std::string describe(const ModelLoadOptions& o) { return str(o.device.str(), " ", c10::toString(o.dtype)); }

void write_json(const std::string& path, const nlohmann::json& j) {
  if (path == "-") {
    std::cout << j.dump(2) << std::endl;
    return;
  }
  file_write_atomic(path, j.dump(2) + "\n");
}

}  // namespace patchllm::cli
