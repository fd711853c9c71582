// Policy-search speed on ResNet-sized problems (LIMPQ.md section 6).
//
//   build/bench/limpq_search_bench OUT_DIR [REPEATS]
//
// For resnet18 and resnet50 at 224x224 (real per-layer MACs and parameters
// from a traced forward pass, 25 (w, a) pairs per searchable layer) it writes
// an indicators file with synthetic learned steps to OUT_DIR, solves the
// W3A4-BitOps + CR-12.2 program REPEATS times with the exact branch and bound
// and once with CBC, and prints one JSON line per model: the median solve time
// and the objectives. bench/search_speed.sh runs the PuLP formulation on the
// same files for comparison.
#include <fmt/core.h>

#include <algorithm>
#include <iostream>
#include <random>

#include "limpq/models/quantized.h"
#include "limpq/quant/indicators.h"
#include "limpq/search/search.h"

namespace {

limpq::quant::Indicators synthetic_indicators(const std::string& arch, uint64_t seed) {
  auto model = limpq::models::make_model(arch, 3, 1000);
  limpq::models::QuantModel qm(model, {3, 224, 224});
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> importance(0.3, 3.0), noise(0.97, 1.03);
  limpq::quant::Indicators ind;
  ind.model = arch;
  ind.input_shape = {3, 224, 224};
  ind.candidates = {6, 5, 4, 3, 2};
  ind.provenance = {{"synthetic", true}, {"seed", seed}};
  for (const auto& l : qm.layers()) {
    limpq::quant::IndicatorLayer e{l.name, l.kind == limpq::models::LayerKind::kConv ? "conv" : "linear",
                                   l.searchable, l.macs, l.params, {}, {}};
    if (l.searchable) {
      const double wi = importance(rng), ai = importance(rng);
      for (int64_t b : ind.candidates) {
        e.weight_steps[b] = 0.05 * wi * std::pow(2.0, 2 - b) * noise(rng);
        e.act_steps[b] = 0.2 * ai * std::pow(2.0, 2 - b) * noise(rng);
      }
    }
    ind.layers.push_back(std::move(e));
  }
  return ind;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: limpq_search_bench OUT_DIR [REPEATS]\n";
    return 2;
  }
  const std::string out_dir = argv[1];
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 51;
  try {
    for (const std::string arch : {"resnet18", "resnet50"}) {
      const auto ind = synthetic_indicators(arch, 0);
      const std::string path = out_dir + "/" + arch + "_indicators.json";
      limpq::quant::write_indicators(path, ind);
      auto options = limpq::search::SearchOptions().bitops("W3A4").cr(12.2);
      std::vector<double> ms;
      limpq::search::SearchResult r;
      for (int i = 0; i < repeats; ++i) {
        r = limpq::search::run_search(ind, options);
        ms.push_back(r.solve.seconds * 1e3);
      }
      std::sort(ms.begin(), ms.end());
      const std::string solver = r.solve.solver;
      auto cbc_options = options;
      cbc_options.solver("cbc");
      const auto cbc = limpq::search::run_search(ind, cbc_options);
      int64_t searchable = 0;
      for (const auto& l : ind.layers) searchable += l.searchable;
      std::cout << fmt::format(
                       R"({{"model": "{}", "indicators": "{}", "searchable_layers": {}, "pairs": 25, )"
                       R"("solver": "{}", "median_ms": {:.4f}, "min_ms": {:.4f}, "objective": {:.12g}, "nodes": {}, )"
                       R"("cbc_ms": {:.3f}, "cbc_objective": {:.12g}}})",
                       arch, path, searchable, solver, ms[ms.size() / 2], ms.front(), r.solve.objective, r.solve.nodes,
                       cbc.solve.seconds * 1e3, cbc.solve.objective)
                << std::endl;
    }
  } catch (const std::exception& e) {
    std::cerr << "limpq_search_bench: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
