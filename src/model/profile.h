// A window of work under LibTorch's Kineto profiler (CPU ops and CUDA kernels), saved as a Chrome trace:
// tools/profile_summary.py summarises one by kernel and by host op. Used where an environment variable asks for it
// (PATCHLLM_PROFILE=FILE); a no-op without one, or with a LibTorch built without Kineto.
#pragma once
#include <string>

namespace patchllm {

class KinetoWindow {
 public:
  // memory: the allocator's events too (which op holds the memory peak).
  explicit KinetoWindow(std::string path = {}, bool memory = false) : _path(std::move(path)), _memory(memory) {}
  // PATCHLLM_PROFILE=FILE, PATCHLLM_PROFILE_MEMORY=1.
  static KinetoWindow from_env();
  bool wanted() const { return !_path.empty(); }
  bool active() const { return _on; }
  void begin();
  // Saves the trace (if begin() started one) and logs "profile of <what> written to FILE".
  void end(const std::string& what);

 private:
  std::string _path;
  bool _memory = false;
  bool _on = false;
};

}  // namespace patchllm
