// patchllm inspect -m DIR [--tile RxC] [--json OUT]: architecture, shapes, parameters, bytes, tiling of every linear.
#include <cstdio>
#include <map>

#include "cli/common.h"
#include "core/error.h"
#include "core/provenance.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "mask/mask.h"
#include "model/config.h"

namespace patchllm::cli {

namespace {


// inspect --masks: sparsity per layer and matrix, dense-tile fraction, SVG tile map.
void inspect_masks(const std::string& path, const std::string& model, std::string svg, const std::string& json) {
  MaskSet m = mask_load_checked(path, model);
  auto j = mask_report(m);
  std::printf("%s: pattern %s, tiles %lldx%lld, method %s, sparsity %.4f, dense-tile fraction %.4f%s\n", path.c_str(),
              m.pattern.c_str(), (long long)m.tile_r, (long long)m.tile_c,
              m.meta.count("method") ? m.meta.at("method").c_str() : "?", m.sparsity(),
              j["dense_tile_fraction"].get<double>(), model.empty() ? "" : (", checked against " + model).c_str());
  std::printf("\n%-6s %9s %11s\n", "layer", "sparsity", "dense tiles");
  for (const auto& l : j["layers"])
    std::printf("%-6lld %9.4f %11.4f\n", (long long)l["layer"].get<int64_t>(), l["sparsity"].get<double>(),
                l["dense_tile_fraction"].get<double>());
  std::printf("\n%-44s %12s %9s %11s\n", "matrix", "shape", "sparsity", "dense tiles");
  for (const auto& mt : j["matrices"])
    std::printf("%-44s %5lldx%-6lld %9.4f %11.4f\n", mt["name"].get<std::string>().c_str(),
                (long long)mt["shape"][0].get<int64_t>(), (long long)mt["shape"][1].get<int64_t>(),
                mt["sparsity"].get<double>(), mt["dense_tile_fraction"].get<double>());
  if (svg.empty()) svg = path + ".tiles.svg";
  file_write_atomic(svg, mask_svg(m));
  std::printf("\ntile map picture: %s\n", svg.c_str());
  j["svg"] = svg;
  if (!json.empty()) {
    j["provenance"] = provenance_json({path});
    write_json(json, j);
  }
}

}  // namespace

void register_inspect(CLI::App& app) {
  struct Opts {
    std::string model, tile = "128x128", json, masks, svg;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("inspect", "describe a model directory and how PATCH tiles its linears");
  sub->add_option("-m,--model", o->model, "Hugging Face model directory (required unless --masks)")
      ->envname("PATCHLLM_ARG_MODEL");
  sub->add_option("--masks", o->masks, "report on a mask file: per-layer/per-matrix sparsity, dense-tile fraction");
  sub->add_option("--svg", o->svg, "with --masks: write the tile-map picture here (default <masks>.tiles.svg)");
  sub->add_option("--tile", o->tile, "tile size RxC (rows over out features, cols over in features)")
      ->capture_default_str();
  sub->add_option("--json", o->json, "write the report as JSON ('-' = stdout)");
  sub->callback([o] {
    if (!o->masks.empty()) return inspect_masks(o->masks, o->model, o->svg, o->json);
    PATCHLLM_CHECK(!o->model.empty(), InvalidArgument, "inspect needs -m DIR or --masks FILE");
    auto [tr, tc] = parse_tile(o->tile);
    PATCHLLM_CHECK(tr > 0 && tc > 0 && tc % 4 == 0, InvalidArgument, "--tile ", o->tile,
                   ": sizes must be positive and the width a multiple of 4 (2:4 groups must not straddle tiles)");
    ModelConfig c = config_load(o->model);
    Checkpoint ckpt(o->model);
    int64_t params = 0, bytes = 0;
    std::map<std::string, int64_t> dtypes;
    for (const auto& n : ckpt.names()) {
      const auto& e = ckpt.entry(n);
      int64_t numel = 1;
      for (auto s : e.shape) numel *= s;
      params += numel;
      bytes += static_cast<int64_t>(e.end - e.begin);
      dtypes[e.dtype] += numel;
    }
    nlohmann::json j;
    j["model"] = o->model;
    j["architecture"] = c.architecture;
    j["config"] = {{"hidden_size", c.hidden_size},       {"intermediate_size", c.intermediate_size},
                   {"num_layers", c.num_layers},         {"num_heads", c.num_heads},
                   {"num_kv_heads", c.num_kv_heads},     {"head_dim", c.head_dim},
                   {"vocab_size", c.vocab_size},         {"max_position", c.max_position},
                   {"rope_theta", c.rope_theta},         {"rope_scaling", c.rope_scaling.type},
                   {"tie_word_embeddings", c.tie_word_embeddings}, {"attention_bias", c.attention_bias}};
    j["parameters"] = params;
    j["bytes"] = bytes;
    j["dtypes"] = dtypes;
    std::printf("%s: %s, %lld layers, hidden %lld, intermediate %lld, heads %lld/%lld (head_dim %lld), vocab %lld\n",
                o->model.c_str(), c.architecture.c_str(), (long long)c.num_layers, (long long)c.hidden_size,
                (long long)c.intermediate_size, (long long)c.num_heads, (long long)c.num_kv_heads,
                (long long)c.head_dim, (long long)c.vocab_size);
    std::printf("parameters %.3f M, %.2f MB on disk;", params / 1e6, bytes / 1e6);
    for (const auto& [d, n] : dtypes) std::printf(" %s %.1f%%", d.c_str(), 100.0 * n / std::max<int64_t>(1, params));
    std::printf("\nrope: theta %g, scaling %s; embeddings %s\n\n", c.rope_theta, c.rope_scaling.type.c_str(),
                c.tie_word_embeddings ? "tied" : "untied");
    std::printf("%-22s %12s %8s %10s %8s  %s\n", "linear (layer 0)", "shape", "tiles", "tile grid", "ragged",
                "edge tiles");
    int64_t masked = 0, total_tiles = 0, ragged_tiles = 0;
    nlohmann::json lin = nlohmann::json::array();
    for (const auto& name : decoder_linear_names()) {
      const auto& e = ckpt.entry("model.layers.0." + name + ".weight");
      int64_t out = e.shape[0], in = e.shape[1];
      int64_t gr = (out + tr - 1) / tr, gc = (in + tc - 1) / tc;
      bool rag_r = out % tr != 0, rag_c = in % tc != 0;
      int64_t rag = gr * gc - (out / tr) * (in / tc);
      std::string edge = !rag_r && !rag_c ? "-"
                                          : str(rag_r ? str("last row ", out % tr, " of ", tr) : "",
                                                rag_r && rag_c ? ", " : "", rag_c ? str("last col ", in % tc, " of ", tc) : "");
      std::printf("%-22s %5lldx%-6lld %8lld %4lldx%-5lld %8lld  %s\n", name.c_str(), (long long)out, (long long)in,
                  (long long)(gr * gc), (long long)gr, (long long)gc, (long long)rag, edge.c_str());
      masked += out * in;
      total_tiles += gr * gc;
      ragged_tiles += rag;
      lin.push_back({{"name", name}, {"shape", {out, in}}, {"tile_grid", {gr, gc}}, {"ragged_tiles", rag},
                     {"in_multiple_of_4", in % 4 == 0}});
      PATCHLLM_CHECK(in % 4 == 0, InvalidArgument, o->model, ": ", name, " has ", in,
                     " input features, not a multiple of 4: 2:4 sparsity cannot apply");
    }
    masked *= c.num_layers;
    std::printf("\nper layer %lld tiles (%lld ragged), %lld layers; masked linear weights %.3f M = %.1f%% of parameters\n",
                (long long)total_tiles, (long long)ragged_tiles, (long long)c.num_layers, masked / 1e6,
                100.0 * masked / std::max<int64_t>(1, params));
    j["tile"] = {tr, tc};
    j["linears"] = lin;
    j["masked_weights"] = masked;
    if (!o->json.empty()) {
      j["provenance"] = provenance_json({path_join(o->model, "config.json")});
      write_json(o->json, j);
    }
  });
}

}  // namespace patchllm::cli
