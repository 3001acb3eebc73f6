// bench_model: load time vs bytes read, prefill tokens/s, decode tokens/s at several batch sizes, one JSON line per
// measurement plus a table. The HF transformers twin is tools/bench_hf.py; tools/gpu_foundation.sh runs both.
//   bench_model -m DIR [--device cuda] [--prefill 2048] [--batches 1,16] [--decode 64] [-r 5]
//               [--hybrid-f 0.5,0.9,1 [--seed S]]
// A packed directory (export --format packed) runs through its hybrid slots as loaded. --hybrid-f times the dense
// model, then for each F packs it in memory (seeded random tile map with round(F * tiles) 2:4 tiles per linear,
// magnitude 2:4 inside them, bf16, 128x128 tiles) and times that: dense vs hybrid in one run (tools/e2e_gpu_hybrid.sh).
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <sys/stat.h>

#include "core/log.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/packed_linear.h"

using namespace patchllm;

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  std::string dir, device = "cuda";
  int64_t prefill = 2048, decode = 64, reps = 5, seed = 0;
  std::vector<int64_t> batches = {1, 16};
  std::vector<double> hybrid_f;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
    if (a == "-m") dir = next();
    else if (a == "--device") device = next();
    else if (a == "--prefill") prefill = std::stoll(next());
    else if (a == "--decode") decode = std::stoll(next());
    else if (a == "-r") reps = std::stoll(next());
    else if (a == "--seed") seed = std::stoll(next());
    else if (a == "--hybrid-f") {
      std::stringstream ss(next());
      for (std::string t; std::getline(ss, t, ',');) hybrid_f.push_back(std::stod(t));
    } else if (a == "--batches") {
      batches.clear();
      std::stringstream ss(next());
      for (std::string t; std::getline(ss, t, ',');) batches.push_back(std::stoll(t));
    } else {
      std::fprintf(stderr, "usage: bench_model -m DIR [--device cuda|cpu] [--prefill N] [--batches 1,16] [--decode N] "
                           "[-r R] [--hybrid-f F1,F2,... [--seed S]]\n");
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "error: -m DIR is required\n");
    return 2;
  }
  try {
    ModelLoadOptions opt;
    opt.device = torch::Device(device);
    opt.dtype = opt.device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
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
    struct Row {
      std::string variant;
      double prefill_tps = 0;
      std::vector<double> decode_tps;
    };
    std::vector<Row> rows;
    auto bench = [&](const std::string& variant) {
      Row row{variant, 0, {}};
      const char* vn = variant.c_str();
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
      std::printf("{\"engine\":\"patchllm\",\"variant\":\"%s\",\"metric\":\"prefill\",\"tokens\":%lld,\"seconds\":%.4f,"
                  "\"tok_per_s\":%.1f}\n", vn, (long long)prefill, pf, prefill / pf);
      row.prefill_tps = prefill / pf;
      for (int64_t B : batches) {
        const int64_t P = 16;
        std::vector<double> ds;
        for (int64_t r = 0; r < std::max<int64_t>(2, reps / 2) + 1; ++r) {
          auto cache = model->make_cache(B, P + decode);
          auto p = torch::randint(3, V, {B, P}, torch::kLong).to(opt.device);
          auto logits = model->forward(p, &cache);
          auto next = logits.select(1, -1).argmax(-1).view({B, 1});
          sync();
          double a = now_seconds();
          for (int64_t t = 0; t < decode; ++t) {
            logits = model->forward(next, &cache);
            next = logits.select(1, -1).argmax(-1).view({B, 1});
          }
          sync();
          if (r > 0) ds.push_back(now_seconds() - a);
        }
        double d = median(ds);
        std::printf(
            "{\"engine\":\"patchllm\",\"variant\":\"%s\",\"metric\":\"decode\",\"batch\":%lld,\"tokens\":%lld,"
            "\"seconds\":%.4f,\"tok_per_s\":%.1f}\n", vn, (long long)B, (long long)decode, d, B * decode / d);
        row.decode_tps.push_back(B * decode / d);
      }
      std::fflush(stdout);
      rows.push_back(row);
    };
    bench(packed ? "packed" : "dense");
    if (!hybrid_f.empty()) {
      std::vector<LinearPtr> dense;
      for (auto& [name, slot] : model->linears()) dense.push_back(*slot);
      for (double f : hybrid_f) {
        auto slots = model->linears();
        for (size_t i = 0; i < slots.size(); ++i) *slots[i].second = dense[i];
        double a = now_seconds();
        double got = model_pack_random(*model, f, uint64_t(seed));
        sync();
        std::printf("{\"engine\":\"patchllm\",\"metric\":\"pack\",\"hybrid_f\":%.3f,\"sparse_tile_fraction\":%.4f,"
                    "\"seconds\":%.2f}\n", f, got, now_seconds() - a);
        char name[64];
        std::snprintf(name, sizeof name, "hybrid f=%.2f", f);
        bench(name);
      }
    }
    // Table: tokens/s per variant, and the ratio to the first row (dense, or the packed model as loaded).
    std::printf("\n%-16s %15s", "variant", "prefill tok/s");
    for (int64_t B : batches) std::printf(" %14s", ("decode b" + std::to_string(B)).c_str());
    std::printf("   (x vs %s)\n", rows[0].variant.c_str());
    for (const auto& r : rows) {
      std::printf("%-16s %8.0f %5.2fx", r.variant.c_str(), r.prefill_tps, r.prefill_tps / rows[0].prefill_tps);
      for (size_t i = 0; i < r.decode_tps.size(); ++i)
        std::printf(" %7.1f %5.2fx", r.decode_tps[i], r.decode_tps[i] / rows[0].decode_tps[i]);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
