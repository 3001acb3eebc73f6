#include "learn/checkpoint.h"

#include "core/error.h"

namespace patchllm {

namespace {

struct FnHolder : torch::CustomClassHolder {
  CheckpointFn f;
};

struct CheckpointOp : public torch::autograd::Function<CheckpointOp> {
  // inputs = [h, extras...]; the function rides in a capsule because saved_data holds IValues only.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                c10::intrusive_ptr<FnHolder> fn, at::TensorList in_list) {
    // TensorList (not std::vector) so that apply() registers every element as a differentiable input.
    torch::autograd::variable_list in(in_list.begin(), in_list.end());
    ctx->save_for_backward(in);
    ctx->saved_data["fn"] = c10::IValue::make_capsule(fn);
    torch::NoGradGuard no_grad;
    auto extras = std::vector<torch::Tensor>(in.begin() + 1, in.end());
    return fn->f(in[0], extras);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto holder = ctx->saved_data["fn"].toCapsule();
    auto* fn = static_cast<FnHolder*>(holder.get());
    std::vector<torch::Tensor> in;
    for (size_t i = 0; i < saved.size(); ++i) {
      auto d = saved[i].detach();
      in.push_back(ctx->needs_input_grad(i) ? d.requires_grad_(true) : d);  // edges count tensor inputs only
    }
    std::vector<torch::Tensor> outs;
    {
      torch::AutoGradMode on(true);
      outs = fn->f(in[0], std::vector<torch::Tensor>(in.begin() + 1, in.end()));
    }
    std::vector<torch::Tensor> o, g, wrt;
    for (size_t i = 0; i < outs.size(); ++i)
      if (grads[i].defined() && outs[i].requires_grad()) {
        o.push_back(outs[i]);
        g.push_back(grads[i]);
      }
    std::vector<size_t> idx;
    for (size_t i = 0; i < in.size(); ++i)
      if (in[i].requires_grad()) {
        wrt.push_back(in[i]);
        idx.push_back(i);
      }
    torch::autograd::variable_list result(in.size() + 1);  // [fn (none), h, extras...]
    if (o.empty() || wrt.empty()) return result;
    auto gr = torch::autograd::grad(o, wrt, g, /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t j = 0; j < idx.size(); ++j) result[idx[j] + 1] = gr[j];
    return result;
  }
};

}  // namespace

std::vector<torch::Tensor> checkpoint(const CheckpointFn& f, const torch::Tensor& h,
                                      const std::vector<torch::Tensor>& extras) {
  auto fn = c10::make_intrusive<FnHolder>();
  fn->f = f;
  std::vector<torch::Tensor> in = {h};
  in.insert(in.end(), extras.begin(), extras.end());
  return CheckpointOp::apply(fn, at::TensorList(in));
}

}  // namespace patchllm
