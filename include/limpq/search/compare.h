// Does one criterion rank layers the way another does? Rank correlations
// between two indicators files over their common searchable layers
// (`limpq compare-indicators A.json B.json`), typically a criterion against
// the measured single-layer sensitivity (`limpq sensitivity --method drop`).
//
// For each bit-width both files have, across layers: Spearman's rho and
// Kendall's tau-b of the weight values, of the activation values, and of the
// combined score I_a(l, b) + alpha I_w(l, b) (each file with its own alpha).
// Overall: the mean of those per-bit-width correlations, and the correlation
// pooled over every (layer, bit-width) point (which also counts how each
// file orders the bit-widths, so it runs higher).
//
//   IndicatorComparison c = compare_indicator_files("a.json", "drop.json", CompareOptions().criterion_a("fisher-error"));
//   fmt::print("{}", comparison_to_text(c, "a.json", "drop.json"));
#pragma once

#include <torch/arg.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "limpq/quant/indicators.h"

namespace limpq::search {

// Rank correlations of two equally long samples; ties get average ranks
// (Spearman) and the tau-b correction (Kendall). NaN when either sample is
// constant or shorter than 2.
double spearman(const std::vector<double>& x, const std::vector<double>& y);
double kendall_tau_b(const std::vector<double>& x, const std::vector<double>& y);

struct RankAgreement {
  double spearman = 0;
  double kendall = 0;
  int64_t points = 0;
};

struct BitsComparison {
  int64_t bits = 0;
  RankAgreement weights, acts, combined;
};

struct IndicatorComparison {
  std::vector<std::string> layers;    // common searchable layers, in the first file's order
  std::vector<BitsComparison> per_bits;  // common bit-widths, most bits first
  // Means over per_bits, and pooled over every (layer, bits) point.
  RankAgreement mean_weights, mean_acts, mean_combined;
  RankAgreement pooled_weights, pooled_acts, pooled_combined;
  double alpha_a = 0, alpha_b = 0;
  nlohmann::ordered_json to_json() const;
};

// Compares the values of `a` and `b` (already in the criterion form wanted,
// see apply_criterion). Errors when they share fewer than 2 searchable
// layers or no bit-width.
IndicatorComparison compare_indicators(const quant::Indicators& a, const quant::Indicators& b, double alpha_a,
                                       double alpha_b);

// How each file's values are read: the criterion form (criterion.h) and the
// alpha of its combined score (unset: the criterion's default_alpha).
struct CompareOptions {
  TORCH_ARG(std::string, criterion_a) = "step";
  TORCH_ARG(std::string, criterion_b) = "step";
  TORCH_ARG(std::optional<double>, alpha_a) = std::nullopt;
  TORCH_ARG(std::optional<double>, alpha_b) = std::nullopt;

 public:
  template <typename V>
  void visit(V&& v) {
    v("criterion_a", criterion_a_, "form of the first file's values (see limpq search --criterion)");
    v("criterion_b", criterion_b_, "form of the second file's values");
    v("alpha_a", alpha_a_, "alpha of the first file's combined score (unset: its criterion's)");
    v("alpha_b", alpha_b_, "alpha of the second file's combined score (unset: its criterion's)");
  }
};

// Reads two indicators files, puts each in its criterion's form and compares
// them (the alphas used are in the result).
IndicatorComparison compare_indicator_files(const std::string& path_a, const std::string& path_b,
                                            const CompareOptions& options);

std::string comparison_to_text(const IndicatorComparison& comparison, const std::string& name_a,
                               const std::string& name_b);

}  // namespace limpq::search
