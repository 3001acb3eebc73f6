// Mask statistics and the tile-map SVG used by `patchllm inspect --masks`.
#include <array>
#include <regex>

#include "core/error.h"
#include "mask/mask.h"

namespace patchllm {

namespace {

struct Entry {
  int64_t layer;
  int64_t index;  // position in decoder_linear_names()
};

Entry parse_name(const std::string& name) {
  static const std::regex re(R"(model\.layers\.(\d+)\.(.+)\.weight)");
  std::smatch mt;
  Entry e{-1, -1};
  if (std::regex_match(name, mt, re)) {
    e.layer = std::stoll(mt[1]);
    const auto& names = decoder_linear_names();
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == mt[2].str()) e.index = static_cast<int64_t>(i);
  }
  return e;
}

// Element-weighted fraction of dense tiles (tile_map == 0) for a 2:4/hybrid mask.
std::pair<int64_t, int64_t> dense_elements(const LinearMask& lm, int64_t r, int64_t c) {
  int64_t out = lm.keep.size(0), in = lm.keep.size(1);
  if (!lm.tile_map.defined()) return {0, out * in};
  auto full = lm.tile_map.to(torch::kBool).logical_not().repeat_interleave(r, 0).repeat_interleave(c, 1);
  return {full.narrow(0, 0, out).narrow(1, 0, in).sum().item<int64_t>(), out * in};
}

}  // namespace

nlohmann::json mask_report(const MaskSet& m) {
  nlohmann::json j;
  j["pattern"] = m.pattern;
  j["tile"] = {m.tile_r, m.tile_c};
  j["sparsity"] = m.sparsity();
  for (const auto& k : {"method", "target_sparsity", "achieved_sparsity"})
    if (m.meta.count(k)) j[k] = m.meta.at(k);
  std::map<int64_t, std::array<int64_t, 4>> layers;  // kept, total, dense, total
  int64_t dense_all = 0, total_all = 0;
  nlohmann::json mats = nlohmann::json::array();
  for (const auto& [name, lm] : m.masks) {
    int64_t kept = lm.keep.sum().item<int64_t>(), total = lm.keep.numel();
    auto [dense, tot] = dense_elements(lm, m.tile_r, m.tile_c);
    Entry e = parse_name(name);
    auto& L = layers[e.layer];
    L[0] += kept;
    L[1] += total;
    L[2] += dense;
    L[3] += tot;
    dense_all += dense;
    total_all += tot;
    mats.push_back({{"name", name},
                    {"layer", e.layer},
                    {"shape", {lm.keep.size(0), lm.keep.size(1)}},
                    {"sparsity", 1.0 - double(kept) / double(total)},
                    {"dense_tile_fraction", double(dense) / double(tot)}});
  }
  nlohmann::json lj = nlohmann::json::array();
  for (const auto& [l, v] : layers)
    lj.push_back({{"layer", l}, {"sparsity", 1.0 - double(v[0]) / double(v[1])},
                  {"dense_tile_fraction", double(v[2]) / double(v[3])}});
  j["dense_tile_fraction"] = total_all ? double(dense_all) / double(total_all) : 0.0;
  j["layers"] = lj;
  j["matrices"] = mats;
  return j;
}

std::string mask_svg(const MaskSet& m) {
  // Layout: each matrix drawn at `px` pixels per tile, matrices of one layer side by side.
  std::map<int64_t, std::map<int64_t, const LinearMask*>> grid;
  int64_t max_rows = 1;
  std::vector<int64_t> col_w(decoder_linear_names().size(), 1);
  for (const auto& [name, lm] : m.masks) {
    Entry e = parse_name(name);
    if (e.layer < 0 || e.index < 0) continue;
    grid[e.layer][e.index] = &lm;
    int64_t tr = (lm.keep.size(0) + m.tile_r - 1) / m.tile_r, tc = (lm.keep.size(1) + m.tile_c - 1) / m.tile_c;
    max_rows = std::max(max_rows, tr);
    col_w[e.index] = std::max(col_w[e.index], tc);
  }
  int64_t max_tiles = max_rows;
  for (auto w : col_w) max_tiles = std::max(max_tiles, w);
  const double px = std::max(1.0, std::min(12.0, 600.0 / double(max_tiles)));
  const double gap = 10, label = 60, head = 24;
  std::vector<double> x0(col_w.size());
  double x = label;
  for (size_t i = 0; i < col_w.size(); ++i) {
    x0[i] = x;
    x += col_w[i] * px + gap;
  }
  double row_h = max_rows * px + gap;
  double width = x, height = head + row_h * std::max<size_t>(1, grid.size());
  std::string s = str("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"", width, "\" height=\"", height,
                      "\" font-family=\"monospace\" font-size=\"10\">\n<rect width=\"100%\" height=\"100%\" "
                      "fill=\"white\"/>\n<!-- patchllm tile map: dark = dense tile, light = 2:4 tile; unstructured: "
                      "grey level = kept fraction -->\n");
  for (size_t i = 0; i < col_w.size(); ++i) {
    std::string n = decoder_linear_names()[i];
    s += str("<text x=\"", x0[i], "\" y=\"14\">", n.substr(n.find('.') + 1), "</text>\n");
  }
  int64_t row = 0;
  for (const auto& [layer, mats] : grid) {
    double y = head + row * row_h;
    s += str("<text x=\"2\" y=\"", y + 10, "\">layer ", layer, "</text>\n");
    for (const auto& [idx, lm] : mats) {
      torch::Tensor shade;  // 0..1, 1 = dark
      if (lm->tile_map.defined() && m.pattern != "unstructured")
        shade = 1.0 - lm->tile_map.to(torch::kFloat32) * 0.85;
      else
        shade = mask_tile_density(lm->keep, m.tile_r, m.tile_c);
      shade = shade.contiguous();
      auto a = shade.accessor<float, 2>();
      for (int64_t r = 0; r < shade.size(0); ++r)
        for (int64_t c = 0; c < shade.size(1); ++c) {
          int g = static_cast<int>(255 * (1.0 - a[r][c]));
          s += str("<rect x=\"", x0[idx] + c * px, "\" y=\"", y + r * px, "\" width=\"", px, "\" height=\"", px,
                   "\" fill=\"rgb(", g, ",", g, ",", std::min(255, g + 40), ")\" stroke=\"#888\" stroke-width=\"0.2\"/>\n");
        }
    }
    ++row;
  }
  s += "</svg>\n";
  return s;
}

}  // namespace patchllm
