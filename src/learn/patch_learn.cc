#include "learn/patch_learn.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "core/log.h"
#include "learn/checkpoint.h"
#include "learn/learn_state.h"
#include "learn/noise.h"
#include "learn/pattern_mask.h"
#include "learn/tile_mask.h"
#include "model/profile.h"
#include "ops/mask_fused.h"

namespace patchllm {

bool learn_method_known(const std::string& m) { return m == "patch-tile" || m == "patch-joint" || m == "maskllm"; }

void learn_check_options(const LearnOptions& o) {
  PATCHLLM_CHECK(learn_method_known(o.method), InvalidArgument, "--method ", o.method,
                 ": unknown (patch-tile | patch-joint | maskllm)");
  PATCHLLM_CHECK(o.target_sparsity >= 0 && o.target_sparsity <= 0.5, InvalidArgument, "--sparsity ",
                 o.target_sparsity, " outside [0, 0.5]");
  PATCHLLM_CHECK(o.tile_c % 4 == 0 && o.tile_c > 0 && o.tile_r > 0, InvalidArgument, "tile width ", o.tile_c,
                 " is not a positive multiple of 4 (2:4 groups would straddle tiles)");
  PATCHLLM_CHECK(o.steps > 0 && o.micro_batch > 0 && o.grad_accum > 0, InvalidArgument,
                 "--steps, --micro-batch and --grad-accum must be positive");
  PATCHLLM_CHECK(o.keep_layers >= 0, InvalidArgument, "--keep-layers ", o.keep_layers, " is negative");
}

namespace {

// One decoder linear during learning.
struct Slot {
  std::string name;
  int64_t layer = 0;
  TileGrid grid;
  LinearPtr original;
  LinearPtr* ptr = nullptr;                  // the model's slot (restored to `original` at the end)
  std::shared_ptr<TileMaskedLinear> tile;    // patch-tile
  std::shared_ptr<JointMaskedLinear> joint;  // patch-joint, maskllm
  std::shared_ptr<MaterialisedMaskLinear> mat;  // materialise_masks (reference design)
  torch::Tensor m24f;                        // materialise_masks, patch-tile: the fixed 2:4 mask, compute dtype
  torch::Tensor M;                           // materialise_masks: the current full-size soft mask
  torch::Tensor theta;                       // [grid_r, grid_c] view into TileLogits::theta (no grad; to read)
  torch::Tensor phi;                         // fp32 leaf (undefined when the method has none)
  double w_norm = 0;                         // ‖W‖_F
  torch::Tensor t;                           // current tile sample
};

// Sums of a flat per-tile vector over contiguous runs of it (the tiles of one matrix, or of one layer): a gather into
// a zero-padded [runs, longest] matrix and a row sum. A few kernels for all runs, and deterministic on CUDA (no
// atomics, unlike index_add).
struct Segments {
  torch::Tensor idx;  // [n·width] positions into the vector with one zero appended; padding points at the zero
  int64_t n = 0, width = 0;
  Segments() = default;
  Segments(const std::vector<int64_t>& lengths, torch::Device dev) : n(int64_t(lengths.size())) {
    for (int64_t l : lengths) width = std::max(width, l);
    const int64_t total = std::accumulate(lengths.begin(), lengths.end(), int64_t(0));
    std::vector<int64_t> v(size_t(n * width), total);
    int64_t at = 0;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < lengths[size_t(r)]; ++j) v[size_t(r * width + j)] = at++;
    idx = torch::tensor(v, torch::kLong).to(dev);
  }
  torch::Tensor sum(const torch::Tensor& x) const {
    return torch::cat({x, x.new_zeros({1})}).index_select(0, idx).view({n, width}).sum(1);
  }
};

// The tile logits of every matrix in one fp32 leaf, so that a step samples, sums and updates them with a handful of
// kernels instead of a dozen per matrix (at 168 matrices the per-matrix ops made the Qwen2.5-0.5B step host-bound).
struct TileLogits {
  torch::Tensor theta;                      // [Σ tiles] leaf; matrix m's tiles at [off_m, off_m + sizes_m)
  std::vector<int64_t> sizes;               // tiles per matrix
  torch::Tensor numel;                      // element count per tile (ragged edges count their true size)
  torch::Tensor s_kept, s_pruned;           // patch-tile: per-tile Σ W² over kept / pruned entries (fp32)
  Segments per_matrix, per_layer;
  torch::Tensor layer_numel;                // [layers] Σ|W| per decoder layer
};

double linear_schedule(double a, double b, double frac) { return a + (b - a) * frac; }

// The trajectory-defining options, stored with the state: resuming with different ones is an error.
std::string trajectory_key(const LearnOptions& o, int64_t n_windows) {
  nlohmann::json j = {{"method", o.method}, {"s", o.target_sparsity}, {"tile", {o.tile_r, o.tile_c}},
                      {"steps", o.steps}, {"mb", o.micro_batch}, {"accum", o.grad_accum}, {"seqlen", o.seqlen},
                      {"lr", o.lr}, {"warmup", o.warmup}, {"clip", o.grad_clip}, {"wd", o.weight_decay},
                      {"tau", {o.tau0, o.tau1, o.tau24_0, o.tau24_1}},
                      {"kappa", {o.kappa0, o.kappa1, o.kappa24_0, o.kappa24_1}}, {"sreg", o.sparse_reg},
                      {"wreg", o.weight_reg}, {"per_layer", o.per_layer},
                      {"prior", {o.prior_strength, o.prior_strength_24, o.init_std}}, {"hard", {o.hard, o.hard_24}},
                      {"seed", o.seed}, {"windows", n_windows},
                      {"layout", 2}};  // 2: the tile logits are one optimizer parameter, sampled in one draw
  if (!o.fused_masks) j["unfused"] = true;  // on CUDA the two paths draw the 2:4 noise from different generators
  return j.dump();
}

// The learned tensors of every slot, by name, for learn_state.h.
std::vector<StateTensor> state_tensors(const std::vector<Slot>& slots) {
  std::vector<StateTensor> ts;
  for (size_t m = 0; m < slots.size(); ++m) {
    if (slots[m].theta.defined()) ts.push_back({"theta." + std::to_string(m), slots[m].theta});
    if (slots[m].phi.defined()) ts.push_back({"phi." + std::to_string(m), slots[m].phi});
  }
  return ts;
}

}  // namespace

torch::Tensor next_token_ce(const Model& model, const torch::Tensor& h, const torch::Tensor& tokens, int64_t chunk) {
  const int64_t B = h.size(0), T = h.size(1) - 1;
  PATCHLLM_CHECK(T > 0 && tokens.size(0) == B && tokens.size(1) == T + 1, InvalidArgument,
                 "next_token_ce: hidden states and tokens disagree in shape");
  auto hp = h.narrow(1, 0, T);
  auto tgt = tokens.narrow(1, 1, T);
  namespace F = torch::nn::functional;
  if (chunk <= 0 || chunk >= T) {
    auto logits = model.head(hp);
    return F::cross_entropy(logits.reshape({-1, logits.size(-1)}), tgt.reshape({-1}));
  }
  torch::Tensor sum;
  for (int64_t c0 = 0; c0 < T; c0 += chunk) {
    const int64_t n = std::min(chunk, T - c0);
    auto tc = tgt.narrow(1, c0, n).reshape({-1});
    auto f = [&model, tc](const torch::Tensor& hin, const std::vector<torch::Tensor>&) {
      auto lg = model.head(hin);
      return std::vector<torch::Tensor>{
          F::cross_entropy(lg.reshape({-1, lg.size(-1)}), tc, F::CrossEntropyFuncOptions().reduction(torch::kSum))};
    };
    auto part = checkpoint(f, hp.narrow(1, c0, n), {})[0];
    sum = sum.defined() ? sum + part : part;
  }
  return sum / double(B * T);
}

LearnResult patch_learn(Model& model, const MaskSet& prior, const torch::Tensor& train, const LearnOptions& o_in) {
  LearnOptions o = o_in;
  learn_check_options(o);
  const bool tiles = o.method != "maskllm", patterns = o.method != "patch-tile";
  if (!tiles) o.target_sparsity = 0.5;
  if (o.weight_decay < 0) o.weight_decay = tiles ? 0.0 : 0.1;
  PATCHLLM_CHECK(train.dim() == 2 && train.size(0) > 0, InvalidArgument, "no training windows (empty training text?)");
  auto gen = at::detail::createCPUGenerator(o.seed);  // init and data order; sampling noise comes from noise.h
  const auto dev = model.device;
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(dev);

  std::vector<Slot> slots;
  std::vector<torch::Tensor> s_kept, s_pruned;  // patch-tile, per matrix: joined into TileLogits below
  int64_t slot_index = 0;
  double total = 0, w_norm_total = 0;
  for (auto& [name, ptr] : model.linears()) {
    auto it = prior.masks.find(name);
    PATCHLLM_CHECK(it != prior.masks.end(), InvalidArgument, "prior mask has no entry for ", name);
    const Linear& base = **ptr;
    PATCHLLM_CHECK(it->second.keep.sizes() == base.weight.sizes(), InvalidArgument, "prior mask for ", name,
                   " has shape ", it->second.keep.sizes(), ", the weight ", base.weight.sizes());
    Slot s;
    s.name = name;
    // Decoder layer from the HF name ("model.layers.<i>."), for per-layer targets and checkpointing.
    const auto at = name.find("layers.");
    s.layer = at == std::string::npos ? slot_index / 7 : std::stoll(name.substr(at + 7));
    ++slot_index;
    s.grid = TileGrid{base.out_features(), base.in_features(), o.tile_r, o.tile_c};
    s.original = *ptr;
    s.ptr = ptr;
    total += double(s.grid.rows * s.grid.cols);
    s.w_norm = base.weight.to(torch::kFloat32).norm().item<double>();
    w_norm_total += s.w_norm;
    if (tiles) {
      // θ ~ N(0, std²) in fp32 (the reference keeps bf16 logits with no master copy) plus the tile prior.
      auto theta = torch::randn({s.grid.grid_r(), s.grid.grid_c()}, gen) * o.init_std;
      const auto& scores = it->second.tile_scores;
      if (scores.defined()) {
        int64_t n = theta.numel(), n_dense = std::llround(n * (1 - 2 * o.target_sparsity));
        auto order = scores.reshape({-1}).argsort(0, /*descending=*/true);
        auto sign = -torch::ones({n});
        if (n_dense > 0) sign.index_fill_(0, order.narrow(0, 0, n_dense), 1.0);
        theta += (sign * o.init_std * o.prior_strength).view(theta.sizes());
      }
      s.theta = theta;  // CPU for now: joined into TileLogits::theta below
    }
    if (patterns) {
      // PATCH-Joint replaces the random init by the prior; MaskLLM adds the prior to its random init.
      double noise = o.method == "maskllm" ? o.init_std : 0.0;
      s.phi = pattern_prior_logits(it->second.keep, o.init_std, o.prior_strength_24, noise, gen)
                  .to(dev)
                  .requires_grad_(true);
      s.joint = std::make_shared<JointMaskedLinear>(base, s.grid);
      s.joint->hard = o.hard_24;
      s.joint->want_norm = o.weight_reg > 0;
      s.joint->fused = o.fused_masks;
      *ptr = s.joint;
    } else {
      s.tile = std::make_shared<TileMaskedLinear>(base, it->second.keep, s.grid);
      s.tile->t = torch::ones({s.grid.grid_r(), s.grid.grid_c()}, f32);
      // Inside a recomputed layer W_eff lives only during that layer's backward; elsewhere it would live all step.
      s.tile->save_weff = o.checkpoint_layers && s.layer < model.config.num_layers - o.keep_layers;
      s.tile->fused = o.fused_masks;
      // ‖M ⊙ W‖²_F over a tile = S_kept + t²·S_pruned (patch-method.md §1.10): no full-size work per step.
      auto w2 = base.weight.to(torch::kFloat32).square();
      s_kept.push_back(tile_reduce(w2 * s.tile->keep24, s.grid).reshape({-1}));
      s_pruned.push_back(tile_reduce(w2 * s.tile->keep24.logical_not(), s.grid).reshape({-1}));
      *ptr = s.tile;
    }
    if (o.materialise_masks) {
      s.mat = std::make_shared<MaterialisedMaskLinear>(base);
      if (s.tile) s.m24f = s.tile->keep24.to(base.weight.scalar_type());
      *ptr = s.mat;
    }
    slots.push_back(std::move(s));
  }
  const int64_t n_layers = slots.empty() ? 0 : slots.back().layer + 1;
  TileLogits tl;
  if (tiles) {
    std::vector<torch::Tensor> th, ne;
    std::vector<int64_t> layer_tiles(size_t(n_layers), 0);
    for (size_t m = 0; m < slots.size(); ++m) {
      auto& s = slots[m];
      PATCHLLM_CHECK(m == 0 || s.layer >= slots[m - 1].layer, Error, "decoder linears out of layer order at ", s.name);
      tl.sizes.push_back(s.theta.numel());
      layer_tiles[size_t(s.layer)] += s.theta.numel();
      th.push_back(s.theta.reshape({-1}));
      ne.push_back(tile_numel(s.grid).reshape({-1}));
    }
    tl.theta = torch::cat(th).to(dev).requires_grad_(true);
    tl.numel = torch::cat(ne).to(dev);
    if (!s_kept.empty()) tl.s_kept = torch::cat(s_kept), tl.s_pruned = torch::cat(s_pruned);
    tl.per_matrix = Segments(tl.sizes, dev);
    tl.per_layer = Segments(layer_tiles, dev);
    tl.layer_numel = tl.per_layer.sum(tl.numel);
    auto views = tl.theta.detach().split_with_sizes(tl.sizes);
    for (size_t m = 0; m < slots.size(); ++m)
      slots[m].theta = views[m].view({slots[m].grid.grid_r(), slots[m].grid.grid_c()});
  }

  std::vector<torch::Tensor> params;
  if (tiles) params.push_back(tl.theta);
  for (auto& s : slots)
    if (s.phi.defined()) params.push_back(s.phi);
  torch::optim::AdamW adam(
      params, torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(o.weight_decay));
  const int64_t N = train.size(0);
  auto perm = torch::randperm(N, gen, torch::TensorOptions().dtype(torch::kLong));  // shuffled with the seed
  const std::string key = trajectory_key(o, N);
  int64_t start = 0;
  if (o.resume && !o.state_path.empty() && file_exists(o.state_path)) {
    start = load_learn_state(o.state_path, key, state_tensors(slots), adam);
    log_info("resuming from ", o.state_path, " at step ", start, "/", o.steps);
  }

  const double d_target = 1 - o.target_sparsity;
  LearnResult res;
  res.history = nlohmann::json::array();
  std::ofstream log;
  if (!o.log_jsonl.empty()) {
    // A fresh run truncates the log; a resumed one appends, so the file holds every step once.
    log.open(o.log_jsonl, start > 0 ? std::ios::app : std::ios::trunc);
    PATCHLLM_CHECK(log.good(), Error, o.log_jsonl, ": cannot open the training log");
  }
  Progress prog(o.method, o.steps);
  cuda_peak_gib(dev, /*reset=*/true);
  const double t_start = now_seconds();
  const int64_t tokens_per_step = o.micro_batch * o.grad_accum * train.size(1);
  int64_t step = start;
  // PATCHLLM_PROFILE=FILE: the third step of this process (tools/learn_gpu_scale.sh summarises it).
  KinetoWindow profiler = KinetoWindow::from_env();
  for (; step < o.steps; ++step) {
    if (o.stop_after >= 0 && step >= o.stop_after) break;
    if (step - start == 2) profiler.begin();
    const double t_step = now_seconds();
    const double frac = std::min(1.0, double(step) / double(o.steps));
    const double tau = linear_schedule(o.tau0, o.tau1, frac), kappa = linear_schedule(o.kappa0, o.kappa1, frac);
    const double tau24 = linear_schedule(o.tau24_0, o.tau24_1, frac);
    const double kappa24 = linear_schedule(o.kappa24_0, o.kappa24_1, frac);
    const double wreg = o.weight_reg * (1 - frac);
    double lr = step < o.warmup ? o.lr * (step + 1) / o.warmup
                                : 0.5 * o.lr * (1 + std::cos(M_PI * (step - o.warmup) / std::max(1.0, o.steps - o.warmup)));
    for (auto& pg : adam.param_groups()) static_cast<torch::optim::AdamWOptions&>(pg.options()).lr(lr);
    adam.zero_grad();
    // Summed on the device and read once per step: a host sync per micro-batch would stall the launch queue.
    torch::Tensor ce_sum = torch::zeros({}, f32), dens = torch::zeros({}, f32), rw_sum = torch::zeros({}, f32);
    for (int64_t a = 0; a < o.grad_accum; ++a) {
      const int64_t first = (step * o.grad_accum + a) * o.micro_batch;  // data position follows from the step
      std::vector<int64_t> idx;
      for (int64_t b = 0; b < o.micro_batch; ++b) idx.push_back(perm[(first + b) % N].item<int64_t>());
      auto x = train.index_select(0, torch::tensor(idx)).to(dev);
      // Fresh noise for every micro-batch (as the reference's forward pre-hook): the tiles of all matrices in one
      // draw seeded by (step, micro); the 2:4 noise per matrix, seeded by (step, micro, matrix).
      std::vector<torch::Tensor> norms(slots.size());  // ‖M ⊙ W‖_F where it comes from the full mask
      torch::Tensor t_all, tile_dense;                  // the tile sample; t·|tile| (its share of the density)
      std::vector<torch::Tensor> t_parts;
      if (tiles) {
        t_all = tile_sample(tl.theta, kappa, tau, o.hard, noise_seed(o.seed, step, a, 0, 2));
        t_parts = t_all.split_with_sizes(tl.sizes);  // views; the backward is one concatenation
        tile_dense = t_all * tl.numel;
      }
      for (size_t m = 0; m < slots.size(); ++m) {
        auto& s = slots[m];
        if (tiles) s.t = t_parts[m].view({s.grid.grid_r(), s.grid.grid_c()});
        if (s.tile) s.tile->t = s.t;
        if (s.joint) {
          s.joint->t = s.t;  // undefined for maskllm: no dense tiles
          s.joint->phi = s.phi;
          s.joint->kappa = kappa24;
          s.joint->tau = tau24;
          s.joint->noise_seed = noise_seed(o.seed, step, a, m, 1);
        }
        if (s.mat) {
          // Reference design: M = T + (1 − T) ⊙ M24 in full, with its graph, for every layer before the forward.
          auto m24 = s.tile ? s.m24f
                            : pattern_mask(pattern_sample(s.phi, kappa24, tau24, o.hard_24, s.joint->noise_seed),
                                           s.grid.rows, s.grid.cols)
                                  .to(s.mat->weight.scalar_type());
          if (s.t.defined()) {
            auto T = tile_expand(s.t.to(m24.scalar_type()), s.grid);
            s.M = T + (1 - T) * m24;
          } else {
            s.M = m24;
          }
          s.mat->mask = s.M;
          if (o.weight_reg > 0) norms[m] = (s.mat->weight.to(torch::kFloat32) * s.M).norm();
        }
      }
      torch::Tensor h;
      if (o.checkpoint_layers) {
        h = model.embed_tokens(x);
        auto ctx = model.make_context(x.size(0), x.size(1));
        for (int64_t i = 0; i < n_layers; ++i) {
          std::vector<size_t> ms;
          std::vector<torch::Tensor> extras;
          for (size_t m = 0; m < slots.size(); ++m)
            if (slots[m].layer == i) {
              ms.push_back(m);
              if (slots[m].mat) {
                extras.push_back(slots[m].M);
                continue;
              }
              if (slots[m].t.defined()) extras.push_back(slots[m].t);
              if (slots[m].phi.defined()) extras.push_back(slots[m].phi);
            }
          // Runs again in backward, after this block has ended: capture the context by value.
          auto f = [&model, &slots, ctx, i, ms](const torch::Tensor& hin, const std::vector<torch::Tensor>& ex) {
            size_t e = 0;  // hand the (possibly detached, in the recompute) mask tensors to the linears
            for (size_t m : ms) {
              auto& s = slots[m];
              if (s.mat) {
                s.mat->mask = ex[e++];
                continue;
              }
              if (s.t.defined()) {
                if (s.tile) s.tile->t = ex[e];
                if (s.joint) s.joint->t = ex[e];
                ++e;
              }
              if (s.phi.defined()) s.joint->phi = ex[e++];
            }
            std::vector<torch::Tensor> outs = {model.layer_forward(i, hin, ctx)};
            for (size_t m : ms)
              if (!slots[m].mat && slots[m].joint && slots[m].joint->want_norm)
                outs.push_back(slots[m].joint->last_norm);
            return outs;
          };
          // The last keep_layers layers run plainly: their activations stay until backward, nothing is recomputed.
          const bool recompute = i < n_layers - o.keep_layers;
          auto outs = recompute ? checkpoint(f, h, extras) : f(h, extras);
          h = outs[0];
          size_t k = 1;
          for (size_t m : ms)
            if (!slots[m].mat && slots[m].joint && slots[m].joint->want_norm) norms[m] = outs[k++];
        }
      } else {
        h = model.hidden(x);
        for (size_t m = 0; m < slots.size(); ++m)
          if (!slots[m].mat && slots[m].joint && slots[m].joint->want_norm) norms[m] = slots[m].joint->last_norm;
      }
      auto ce = next_token_ce(model, h, x, o.checkpoint_layers && !o.materialise_masks ? o.ce_chunk : 0);
      h = torch::Tensor();
      auto loss = ce;
      if (tiles) {
        // Analytic density d = 0.5 + 0.5·Σ t·|tile| / Σ|W| (patch-method.md §1.9): both modes keep 2 of 4.
        auto d = 0.5 + 0.5 * tile_dense.sum() / total;
        dens += d.detach();
        if (o.per_layer) {
          auto dl = 0.5 + 0.5 * tl.per_layer.sum(tile_dense) / tl.layer_numel;
          loss = loss + o.sparse_reg * (dl - d_target).abs().sum();
        } else {
          loss = loss + o.sparse_reg * (d - d_target).abs();
        }
      } else {
        dens += 0.5;
      }
      if (o.weight_reg > 0) {
        torch::Tensor num;
        if (tl.s_kept.defined() && !o.materialise_masks) {
          // Tile mode without a full mask: analytic per-tile sums ‖M ⊙ W‖² = S_kept + t²·S_pruned, per matrix.
          num = tl.per_matrix.sum(tl.s_kept + t_all.square() * tl.s_pruned).sqrt().sum();
        } else {
          for (auto& n : norms) PATCHLLM_CHECK(n.defined(), Error, "weight regulariser: a matrix without its norm");
          num = torch::stack(norms).sum();
        }
        auto rw = num / w_norm_total;
        rw_sum += rw.detach();
        loss = loss - wreg * rw;
      }
      (loss / double(o.grad_accum)).backward();
      ce_sum += ce.detach();
    }
    // CUDA: clipping and AdamW fused into one pass per parameter (same math and optimizer state).
    if (!(o.fused_masks && o.grad_clip > 0 && adamw_step_fused(adam, o.grad_clip))) {
      torch::nn::utils::clip_grad_norm_(params, o.grad_clip);
      adam.step();
    }
    const double ce_v = ce_sum.item<double>() / o.grad_accum;  // waits for the step's work: the timing includes it
    const double dens_v = dens.item<double>() / o.grad_accum, rw_v = rw_sum.item<double>() / o.grad_accum;
    const double ms = 1000 * (now_seconds() - t_step);
    if (profiler.active()) {
      if (dev.is_cuda()) torch::cuda::synchronize();
      profiler.end("one step");
    }
    nlohmann::json rec = {{"step", step + 1}, {"steps", o.steps}, {"ce", ce_v}, {"density", dens_v},
                          {"target_density", d_target}, {"weight_reg_term", rw_v}, {"tau", tau}, {"kappa", kappa},
                          {"tau24", tau24}, {"kappa24", kappa24}, {"lr", lr}, {"ms_per_step", ms},
                          {"tokens_per_s", tokens_per_step / (ms / 1000)}, {"seconds", now_seconds() - t_start}};
    if (dev.is_cuda()) rec["cuda_peak_gib"] = cuda_peak_gib(dev, false);
    res.history.push_back(rec);
    if (log.is_open()) log << rec.dump() << "\n" << std::flush;
    char line[256];
    std::snprintf(line, sizeof line, "ce %.4f density %.4f tau %.3f kappa %.0f lr %.2e %.0f ms/step %.0f tok/s",
                  ce_v, dens_v, tau, kappa, lr, ms, tokens_per_step / (ms / 1000));
    prog.update(step + 1, line);
    if (!o.state_path.empty() && o.checkpoint_every > 0 && (step + 1) % o.checkpoint_every == 0 &&
        step + 1 < o.steps)
      save_learn_state(o.state_path, step + 1, key, state_tensors(slots), adam, false);
  }
  if (!o.state_path.empty())
    // Required when the run stops here to be resumed; the final save only warns when the disk is full, so that a
    // full disk does not cost the learned masks.
    save_learn_state(o.state_path, step, key, state_tensors(slots), adam, /*required=*/step < o.steps);
  for (auto& s : slots) *s.ptr = s.original;
  for (auto& s : slots) {
    if (s.theta.defined()) res.thetas[s.name] = s.theta.detach().to(torch::kCPU, torch::kFloat32);
    if (s.phi.defined()) res.phis[s.name] = s.phi.detach().to(torch::kCPU, torch::kFloat32);
  }
  if (step < o.steps) return res;  // stopped early: the state file holds the run

  // Final discrete mask: dense tiles by the exact budget (global, or per layer) or θ > 0; 2:4 pattern fixed (Tile)
  // or argmax of the 6 logits (Joint, MaskLLM).
  std::vector<torch::Tensor> dense(slots.size());
  if (tiles) {
    if (!o.exact_budget) {
      for (size_t m = 0; m < slots.size(); ++m) dense[m] = (slots[m].theta.detach() > 0).to(torch::kCPU);
    } else {
      for (int64_t l = 0; l < (o.per_layer ? n_layers : 1); ++l) {
        std::vector<torch::Tensor> th;
        std::vector<TileGrid> gr;
        std::vector<size_t> ms;
        for (size_t m = 0; m < slots.size(); ++m)
          if (!o.per_layer || slots[m].layer == l) {
            th.push_back(slots[m].theta);
            gr.push_back(slots[m].grid);
            ms.push_back(m);
          }
        auto sel = tile_select_exact(th, gr, o.target_sparsity);
        for (size_t j = 0; j < ms.size(); ++j) dense[ms[j]] = sel[j];
      }
    }
  }
  res.masks.pattern = "2:4";
  res.masks.tile_r = o.tile_r;
  res.masks.tile_c = o.tile_c;
  res.masks.fingerprint = prior.fingerprint;
  res.masks.fingerprint_desc = prior.fingerprint_desc;
  res.masks.meta = prior.meta;
  res.masks.meta["method"] = o.method;
  res.masks.meta["target_sparsity"] = std::to_string(o.target_sparsity);
  res.masks.meta["seed"] = std::to_string(o.seed);
  res.masks.meta["final_rule"] = !tiles ? "argmax" : o.exact_budget ? (o.per_layer ? "exact-budget-per-layer"
                                                                                   : "exact-budget")
                                                                    : "theta>0";
  for (auto& s : slots) {
    const size_t m = &s - slots.data();
    LinearMask lm;
    auto keep24 = patterns ? pattern_argmax_keep(s.phi, s.grid.rows, s.grid.cols) : prior.masks.at(s.name).keep;
    if (tiles) {
      lm.tile_map = (~dense[m]).to(torch::kUInt8);
      lm.keep = keep24.logical_or(tile_expand(dense[m].to(torch::kFloat32), s.grid) > 0.5);
    } else {
      lm.tile_map = mask_tile_map_full(s.grid.rows, s.grid.cols, o.tile_r, o.tile_c);
      lm.keep = keep24.clone();
    }
    res.masks.masks[s.name] = lm;
  }
  res.achieved_sparsity = res.masks.sparsity();
  res.finished = true;
  return res;
}

}  // namespace patchllm
