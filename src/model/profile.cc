#include "model/profile.h"

#include <cstdlib>
#include <set>

#if __has_include(<torch/csrc/autograd/profiler_kineto.h>)
#include <torch/csrc/autograd/profiler_kineto.h>
#define PATCHLLM_HAVE_KINETO 1
#endif

#include "core/log.h"

namespace patchllm {

KinetoWindow KinetoWindow::from_env() {
  const char* p = std::getenv("PATCHLLM_PROFILE");
  const char* m = std::getenv("PATCHLLM_PROFILE_MEMORY");
  return KinetoWindow(p ? p : "", m && std::string(m) == "1");
}

void KinetoWindow::begin() {
  if (_path.empty() || _on) return;
#ifdef PATCHLLM_HAVE_KINETO
  namespace prof = torch::profiler::impl;
  const prof::ProfilerConfig cfg(prof::ProfilerState::KINETO, /*report_input_shapes=*/false, _memory);
  const std::set<prof::ActivityType> acts = {prof::ActivityType::CPU, prof::ActivityType::CUDA};
  torch::autograd::profiler::prepareProfiler(cfg, acts);
  torch::autograd::profiler::enableProfiler(cfg, acts);
  _on = true;
#else
  log_warn("PATCHLLM_PROFILE: this LibTorch has no Kineto profiler; no trace is written");
  _path.clear();
#endif
}

void KinetoWindow::end(const std::string& what) {
  if (!_on) return;
  _on = false;
#ifdef PATCHLLM_HAVE_KINETO
  torch::autograd::profiler::disableProfiler()->save(_path);
  log_info("profile of ", what, " written to ", _path);
#endif
}

}  // namespace patchllm
