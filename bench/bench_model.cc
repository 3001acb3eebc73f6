// bench_model: load time vs bytes read, prefill tokens/s, decode tokens/s at several batch sizes, one JSON line per
// measurement plus a table. The HF transformers twin is tools/bench_hf.py; tools/gpu_foundation.sh runs both.
//   bench_model -m DIR [--device cuda] [--prefill 2048] [--batches 1,16] [--decode 64] [--context 16] [-r 5]
//               [--hybrid-f 0.5,0.9,1 [--seed S] [--hybrid-opts plain,pdl,pdl+cluster]] [--cuda-graph [--span-min S]]
//               [--graph-only] [--no-fuse]
// A packed directory (export --format packed) runs through its hybrid slots as loaded. --hybrid-f times the dense
// model, then for each F packs it in memory (seeded random tile map with round(F * tiles) 2:4 tiles per linear,
// magnitude 2:4 inside them, bf16, 128x128 tiles) and times that: dense vs hybrid in one run (tools/e2e_gpu_hybrid.sh).
// On CUDA every variant (dense baseline and hybrid alike) runs with q|k|v and gate|up fused into one linear each
// (model_fuse_projections; --no-fuse keeps them apart). --cuda-graph times decode with a DecodeGraph: eager prefill,
// one untimed step (warm-up + capture), then graph replay per token, in "graph bB" columns beside the eager ones
// (Model::forward per token). With fusion the dense model is also timed unfused first ("dense unfused"). The graph
// attends over the whole capacity (P + decode + 1 slots) unless --span-min S gives DecodeGraph's spans of S·2^k slots
// (generate's default is 256); then every span the timed steps enter is captured inside the timed loop, as in generate.
// --graph-only: --cuda-graph without the eager decode columns.
// --hybrid-opts times each hybrid F under each set of launch options of the hybrid kernels (HybridKernelOptions:
// plain, or pdl, cluster or workspace, rows, batched, onebatch and sharex joined by '+'), rows "hybrid f=F OPTS".
// The default is the library's (pdl). Where one of them lacks pdl, the dense model is timed without it too ("dense
// plain": the fused layer kernels take it).
// --layer-ops fused,reference times every variant with the fused layer kernels (ops/layer_ops.h, the default) and
// with the LibTorch references (rows suffixed " ref-ops"); the ratio column is against the first dense row.
// --decode-attn kernel,sdpa times every variant with the static decode step's attention kernel (the default) and with
// SDPA over the masked span instead (rows suffixed " sdpa"); only graph columns (DecodeGraph) differ.
// --sdpa-cudnn off keeps PyTorch's cuDNN attention out of SDPA for the whole run, as generate and eval tasks do
// (SdpaCudnnOff); the default leaves SDPA's own choice.
#include <sys/stat.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include "core/log.h"
#include "io/safetensors.h"
#include "model/decode_graph.h"
#include "model/model.h"
#include "model/packed_linear.h"
#include "ops/hybrid_linear.h"
#include "ops/layer_ops.h"

using namespace patchllm;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  std::string dir, device = "cuda";
  int64_t prefill = 2048, decode = 64, reps = 5, seed = 0, context = 16;
  std::vector<int64_t> batches = {1, 16};
  std::vector<double> hybrid_f;
  std::vector<std::string> hybrid_opts = {to_string(HybridKernelOptions{})};  // the library's default
  std::vector<bool> layer_ops = {true};  // fused layer kernels per pass (false: the references)
  std::vector<bool> decode_attn = {true};  // the decode-attention kernel per pass (false: SDPA)
  int64_t span_min = 0;                  // DecodeGraph attention spans; 0: the whole capacity (a step at context P)
  bool cuda_graph = false, no_fuse = false, graph_only = false, sdpa_cudnn = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "-m")
      dir = next();
    else if (a == "--device")
      device = next();
    else if (a == "--prefill")
      prefill = std::stoll(next());
    else if (a == "--decode")
      decode = std::stoll(next());
    else if (a == "--context")
      context = std::stoll(next());
    else if (a == "-r")
      reps = std::stoll(next());
    else if (a == "--seed")
      seed = std::stoll(next());
    else if (a == "--cuda-graph")
      cuda_graph = true;
    else if (a == "--span-min")
      span_min = std::stoll(next());
    else if (a == "--graph-only")
      cuda_graph = graph_only = true;
    else if (a == "--no-fuse")
      no_fuse = true;
    else if (a == "--hybrid-f") {
      std::stringstream ss(next());
      for (std::string t; std::getline(ss, t, ',');) hybrid_f.push_back(std::stod(t));
    } else if (a == "--hybrid-opts") {
      hybrid_opts.clear();
      std::stringstream ss(next());
      for (std::string t; std::getline(ss, t, ',');) hybrid_opts.push_back(t);
    } else if (a == "--layer-ops" || a == "--decode-attn") {
      const bool ops = a == "--layer-ops";
      const std::string on = ops ? "fused" : "kernel", off = ops ? "reference" : "sdpa";
      std::vector<bool>& passes = ops ? layer_ops : decode_attn;
      passes.clear();
      std::stringstream ss(next());
      for (std::string t; std::getline(ss, t, ',');) {
        if (t != on && t != off) {
          std::fprintf(stderr, "error: %s takes %s and/or %s, got '%s'\n", a.c_str(), on.c_str(), off.c_str(),
                       t.c_str());
          return 2;
        }
        passes.push_back(t == on);
      }
    } else if (a == "--sdpa-cudnn") {
      const std::string v = next();
      if (v != "on" && v != "off") {
        std::fprintf(stderr, "error: --sdpa-cudnn takes on or off, got '%s'\n", v.c_str());
        return 2;
      }
      sdpa_cudnn = v == "on";
    } else if (a == "--batches") {
      batches.clear();
      std::stringstream ss(next());
      for (std::string t; std::getline(ss, t, ',');) batches.push_back(std::stoll(t));
    } else {
      std::fprintf(stderr,
                   "usage: bench_model -m DIR [--device cuda|cpu] [--prefill N] [--batches 1,16] [--decode N] "
                   "[-r R] [--hybrid-f F1,F2,... [--seed S] [--hybrid-opts O1,O2,...]] [--cuda-graph] "
                   "[--no-fuse] [--layer-ops fused,reference] [--decode-attn kernel,sdpa] [--sdpa-cudnn on|off] "
                   "[--context P] [--span-min S] [--graph-only]\n");
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "error: -m DIR is required\n");
    return 2;
  }
  try {
    std::vector<HybridKernelOptions> kopts;
    for (const std::string& o : hybrid_opts) kopts.push_back(parse_hybrid_kernel_options(o));  // bad names: exit 1
    ModelLoadOptions opt;
    opt.device = torch::Device(device);
    opt.dtype = opt.device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
    std::unique_ptr<SdpaCudnnOff> no_cudnn;
    if (!sdpa_cudnn) no_cudnn = std::make_unique<SdpaCudnnOff>(opt.device);
    auto sync = [&] {
      if (opt.device.is_cuda()) torch::cuda::synchronize();
    };
    double bytes = 0;
    Checkpoint ckpt(dir);
    for (const auto& f : ckpt.files()) {
      struct stat st;
      if (::stat(f.c_str(), &st) == 0) bytes += st.st_size;
    }
    const bool packed = checkpoint_is_packed(ckpt);
    if (packed && !hybrid_f.empty())
      throw std::runtime_error("--hybrid-f packs a dense model; " + dir + " is already packed");
    double t0 = now_seconds();
    auto model = Model::load(dir, opt);
    sync();
    double load_s = now_seconds() - t0;
    std::printf("{\"engine\":\"patchllm\",\"metric\":\"load\",\"seconds\":%.3f,\"bytes\":%.0f,\"GBps\":%.3f}\n", load_s,
                bytes, bytes / load_s / 1e9);
    torch::NoGradGuard ng;
    const int64_t V = model->config.vocab_size;
    const bool fuse = opt.device.is_cuda() && !no_fuse;  // the same for every variant, so comparisons stay fair
    auto fuse_now = [&] {
      if (!fuse) return;
      int n = model_fuse_projections(*model);
      std::fprintf(stderr, "fused projections: %d of %lld groups (q|k|v, gate|up)\n", n,
                   (long long)(2 * model->layers.size()));
    };
    struct Row {
      std::string variant;
      double prefill_tps = 0;
      std::vector<double> decode_tps;  // per decode mode (eager, then graph with --cuda-graph), per batch
    };
    std::vector<Row> rows;
    std::vector<bool> modes;  // decode through a DecodeGraph?
    if (!graph_only) modes.push_back(false);
    if (cuda_graph) modes.push_back(true);
    // One decode run: prefill P tokens, then `decode` greedy steps timed. Seconds.
    auto decode_once = [&](int64_t B, bool graph, std::string& step_kind) {
      const int64_t P = context;  // prompt tokens before the timed decode steps
      auto p = torch::randint(3, V, {B, P}, torch::kLong).to(opt.device);
      if (graph) {
        DecodeGraphOptions go;
        go.min_span = span_min;
        DecodeGraph g(*model, B, P + decode + 1, go);
        auto next = g.prefill(p).argmax(-1);
        next = g.step(next).argmax(-1);  // warm-up + capture, untimed
        step_kind = g.graph_captured() ? "cuda_graph" : opt.device.is_cuda() ? "static_eager_fallback" : "static";
        sync();
        double a = now_seconds();
        for (int64_t t = 0; t < decode; ++t) next = g.step(next).argmax(-1);
        sync();
        return now_seconds() - a;
      }
      step_kind = "eager";
      auto cache = model->make_cache(B, P + decode);
      auto logits = model->forward(p, &cache);
      auto next = logits.select(1, -1).argmax(-1).view({B, 1});
      sync();
      double a = now_seconds();
      for (int64_t t = 0; t < decode; ++t) {
        logits = model->forward(next, &cache);
        next = logits.select(1, -1).argmax(-1).view({B, 1});
      }
      sync();
      return now_seconds() - a;
    };
    auto bench_one = [&](const std::string& variant, bool fused_now) {
      Row row{variant, 0, {}};
      const char* vn = variant.c_str();
      const char* fused_s = fused_now ? "true" : "false";
      // Prefill: one forward of `prefill` tokens (logits included, as HF computes them).
      std::vector<double> ts;
      auto x = torch::randint(3, V, {1, prefill}, torch::kLong).to(opt.device);
      for (int64_t r = 0; r < reps + 1; ++r) {
        sync();
        double a = now_seconds();
        model->forward(x);
        sync();
        if (r > 0) ts.push_back(now_seconds() - a);  // first run warms up allocators and kernels
      }
      double pf = median(ts);
      std::printf(
          "{\"engine\":\"patchllm\",\"variant\":\"%s\",\"metric\":\"prefill\",\"tokens\":%lld,\"seconds\":%.4f,"
          "\"tok_per_s\":%.1f,\"fused\":%s,\"layer_ops\":\"%s\",\"decode_attn\":\"%s\",\"sdpa_cudnn\":%s}\n",
          vn, (long long)prefill, pf, prefill / pf, fused_s, fused_layer_ops() ? "fused" : "reference",
          fused_decode_attention() ? "kernel" : "sdpa", sdpa_cudnn ? "true" : "false");
      row.prefill_tps = prefill / pf;
      for (bool graph : modes)
        for (int64_t B : batches) {
          std::vector<double> ds;
          std::string kind;
          for (int64_t r = 0; r < std::max<int64_t>(2, reps / 2) + 1; ++r) {
            double s = decode_once(B, graph, kind);
            if (r > 0) ds.push_back(s);  // the first run warms up (and, eagerly, grows the allocator's pools)
          }
          double d = median(ds);
          std::printf(
              "{\"engine\":\"patchllm\",\"variant\":\"%s\",\"metric\":\"decode\",\"batch\":%lld,\"tokens\":%lld,"
              "\"seconds\":%.4f,\"tok_per_s\":%.1f,\"fused\":%s,\"decode_step\":\"%s\",\"context\":%lld,"
              "\"layer_ops\":\"%s\",\"decode_attn\":\"%s\",\"sdpa_cudnn\":%s}\n",
              vn, (long long)B, (long long)decode, d, B * decode / d, fused_s, kind.c_str(), (long long)context,
              fused_layer_ops() ? "fused" : "reference", fused_decode_attention() ? "kernel" : "sdpa",
              sdpa_cudnn ? "true" : "false");
          row.decode_tps.push_back(B * decode / d);
        }
      std::fflush(stdout);
      rows.push_back(row);
    };
    // Each variant once per --layer-ops and --decode-attn pass, in the same process.
    auto bench = [&](const std::string& variant, bool fused_now) {
      for (bool f : layer_ops)
        for (bool at : decode_attn) {
          set_fused_layer_ops(f);
          set_fused_decode_attention(at);
          bench_one(variant + (f ? "" : " ref-ops") + (at ? "" : " sdpa"), fused_now);
        }
      set_fused_layer_ops(true);
      set_fused_decode_attention(true);
    };
    // With fusion, the dense model is first timed unfused too: the fused rows' gain over it is the fusion's alone.
    const std::string base = packed ? "packed" : "dense";
    if (fuse) {
      set_fused_layer_ops(layer_ops.front());
      bench_one(base + " unfused" + (layer_ops.front() ? "" : " ref-ops"), false);
      set_fused_layer_ops(true);
      fuse_now();
    }
    bench(base, fuse);
    // pdl (the default) also launches the fused layer kernels with programmatic dependent launch: the dense model is
    // timed without it too when some hybrid row is, so that pdl's gain is not credited to the hybrid kernels alone.
    if (std::any_of(kopts.begin(), kopts.end(), [](const HybridKernelOptions& k) { return !k.pdl; })) {
      set_hybrid_kernel_options(parse_hybrid_kernel_options("plain"));
      bench(base + " plain", fuse);
      set_hybrid_kernel_options({});
    }
    if (!hybrid_f.empty()) {
      std::vector<LinearPtr> dense;
      for (auto& [name, slot] : model->linears()) dense.push_back(*slot);
      for (double f : hybrid_f) {
        auto slots = model->linears();
        for (size_t i = 0; i < slots.size(); ++i) *slots[i].second = dense[i];
        double a = now_seconds();
        double got = model_pack_random(*model, f, uint64_t(seed));
        sync();
        std::printf(
            "{\"engine\":\"patchllm\",\"metric\":\"pack\",\"hybrid_f\":%.3f,\"sparse_tile_fraction\":%.4f,"
            "\"seconds\":%.2f}\n",
            f, got, now_seconds() - a);
        fuse_now();
        // sharex reads the weights by descriptor from their prefill images: built once for all option sets
        if (opt.device.is_cuda() &&
            std::any_of(kopts.begin(), kopts.end(), [](const HybridKernelOptions& k) { return k.prefill_sharex; }))
          std::fprintf(stderr, "prefill images: %lld packed linears\n", (long long)model_add_prefill_images(*model));
        for (const HybridKernelOptions& ko : kopts) {
          set_hybrid_kernel_options(ko);
          char name[64];
          std::snprintf(name, sizeof name, "hybrid f=%.2f%s%s", f, kopts.size() > 1 ? " " : "",
                        kopts.size() > 1 ? to_string(ko).c_str() : "");
          bench(name, fuse);
        }
        set_hybrid_kernel_options({});
      }
    }
    // Table: tokens/s per variant, and the ratio to the first row (dense, or the packed model as loaded).
    std::printf("\n%-26s %15s", "variant", "prefill tok/s");
    for (bool graph : modes)
      for (int64_t B : batches) std::printf(" %14s", ((graph ? "graph b" : "decode b") + std::to_string(B)).c_str());
    const Row* refp = &rows[0];  // the dense (or packed) model as every other variant runs
    for (const Row& r : rows)
      if (r.variant == base) {
        refp = &r;
        break;
      }
    const Row& ref = *refp;
    std::printf("   (x vs %s)\n", ref.variant.c_str());
    for (const auto& r : rows) {
      std::printf("%-26s %8.0f %5.2fx", r.variant.c_str(), r.prefill_tps, r.prefill_tps / ref.prefill_tps);
      for (size_t i = 0; i < r.decode_tps.size(); ++i)
        std::printf(" %7.1f %5.2fx", r.decode_tps[i], r.decode_tps[i] / ref.decode_tps[i]);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
