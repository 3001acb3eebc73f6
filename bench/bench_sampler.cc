// Host cost of choosing the next id (Sampler::sample), per row and step: on a GPU it runs while the GPU waits, so at
// batch 16 it adds 16 x this to every decode step. Prints a table (median µs per call) and one JSON object with
// provenance. Usage: bench_sampler [--vocab 32000,128256,151936] [--reps 30] [--json FILE]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/file.h"
#include "core/provenance.h"
#include "model/generate.h"

using namespace patchllm;

int main(int argc, char** argv) {
  provenance_set_argv(argc, argv);
  std::vector<int64_t> vocabs = {32000, 128256, 151936};
  int reps = 30;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "error: %s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--vocab") {
      vocabs.clear();
      std::stringstream ss(argv[++i]);
      for (std::string v; std::getline(ss, v, ',');) vocabs.push_back(std::atoll(v.c_str()));
    } else if (a == "--reps") {
      reps = std::atoi(argv[++i]);
    } else if (a == "--json") {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "error: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (reps < 1 || vocabs.empty() || *std::min_element(vocabs.begin(), vocabs.end()) < 2) {
    std::fprintf(stderr, "error: --reps must be >= 1 and every --vocab >= 2\n");
    return 2;
  }
  torch::manual_seed(0);
  struct Setting {
    const char* name;
    double temp, top_p, penalty;
    int64_t top_k;
  };
  const Setting settings[] = {{"greedy", 0, 1, 1, 0},
                              {"temp 0.8", 0.8, 1, 1, 0},
                              {"temp 0.8, top-p 0.9", 0.8, 0.9, 1, 0},
                              {"temp 0.8, top-k 50, top-p 0.9", 0.8, 0.9, 1, 50},
                              {"temp 0.8, top-p 0.9, penalty 1.1", 0.8, 0.9, 1.1, 0}};
  // Logits: "flat" like a random-weight model (normal, std 1), "normal std 4", and "Zipf" like a trained model
  // (-2 ln(rank) over a random ranking: p ~ rank^-2 at temperature 1, a few ids hold most of the mass).
  const std::pair<const char*, double> shapes[] = {{"flat", 1.0}, {"normal std 4", 4.0}, {"Zipf", 0.0}};
  nlohmann::json rows = nlohmann::json::array();
  std::printf("| vocab | logits | setting | median µs per call |\n|---|---|---|---|\n");
  for (int64_t V : vocabs)
    for (const auto& [shape, sd] : shapes)
      for (const auto& s : settings) {
        SamplingOptions o;
        o.temperature = s.temp, o.top_p = s.top_p, o.top_k = s.top_k, o.repetition_penalty = s.penalty, o.seed = 1;
        Sampler sampler(o);
        std::vector<int> seen(64);
        for (size_t i = 0; i < seen.size(); ++i) seen[i] = static_cast<int>((i * 7919) % V);
        std::vector<double> us;
        for (int r = 0; r < reps; ++r) {
          // a fresh row each call, as each decode step gives
          auto logits = sd > 0 ? torch::randn({V}) * sd
                               : -2.0 * torch::log(torch::randperm(V, torch::kFloat32) + 1.0);
          const auto t0 = std::chrono::steady_clock::now();
          volatile int id = sampler.sample(logits, seen);
          (void)id;
          us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(us.begin(), us.end());
        const double med = us[us.size() / 2];
        std::printf("| %lld | %s | %s | %.1f |\n", static_cast<long long>(V), shape, s.name, med);
        rows.push_back({{"vocab", V}, {"logits", shape}, {"setting", s.name}, {"median_us", med}, {"reps", reps}});
      }
  nlohmann::json j = {{"benchmark", "sampler"}, {"rows", rows}, {"provenance", provenance_json()}};
  if (!json_path.empty()) {
    file_write_atomic(json_path, j.dump(1) + "\n");
  } else {
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}
