// AdamW's per-parameter state (step, moments) in LibTorch's optimizer map, for the fused AdamW step (mask_fused.cc)
// and the learning state file (learn/learn_state.cc). The map is keyed by the parameter's TensorImpl address: printed
// into a string in LibTorch 1.x (c10::guts::to_string, an ostream of the pointer), the pointer itself in 2.x.
// Templates, so that only the installed version's branch is compiled.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <sstream>
#include <type_traits>

namespace patchllm {

template <typename Key, typename Tensor>
Key optim_state_key(const Tensor& p) {
  if constexpr (std::is_pointer_v<Key>) {
    return p.unsafeGetTensorImpl();
  } else {
    std::ostringstream os;
    os << static_cast<const void*>(p.unsafeGetTensorImpl());
    return os.str();
  }
}

// p's state, or nullptr before its first step.
template <typename Tensor>
torch::optim::AdamWParamState* adamw_state(torch::optim::AdamW& opt, const Tensor& p) {
  auto& st = opt.state();
  auto it = st.find(optim_state_key<typename std::decay_t<decltype(st)>::key_type>(p));
  return it == st.end() ? nullptr : static_cast<torch::optim::AdamWParamState*>(it->second.get());
}

template <typename Tensor>
torch::optim::AdamWParamState* set_adamw_state(torch::optim::AdamW& opt, const Tensor& p,
                                               std::unique_ptr<torch::optim::AdamWParamState> s) {
  auto& st = opt.state();
  auto& slot = st[optim_state_key<typename std::decay_t<decltype(st)>::key_type>(p)];
  slot = std::move(s);
  return static_cast<torch::optim::AdamWParamState*>(slot.get());
}

}  // namespace patchllm
