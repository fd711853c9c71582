// `limpq report`: one self-contained HTML page (inline SVG and CSS, no
// external resources, opens offline) showing what the search decided:
//
//   - per-layer bit-widths of weights and activations (fixed layers marked);
//   - each searchable layer's indicator curves over the candidate bit-widths;
//   - the Pareto frontier of a BitOps sweep with the chosen policy and the
//     uniform precisions marked;
//   - BitOps and weight size against the budget;
//   - accuracy against full precision and uniform precision, when known.
//
//   ReportInputs in;
//   in.indicators = quant::read_indicators("run/indicators/indicators.json");
//   in.policy = quant::read_policy("run/policy.json");
//   util::write_file_atomic("report.html", render_report(in));
#pragma once

#include <torch/arg.h>

#include <optional>
#include <string>
#include <vector>

#include "limpq/quant/indicators.h"
#include "limpq/quant/policy.h"
#include "limpq/util/option_groups.h"

namespace limpq::deploy {

struct ReportAccuracy {
  std::string name;     // "full precision", "uniform W3A3", "limpq policy"
  double top1 = 0;      // percent
  double bitops = 0;    // whole network; 0: full precision
  double size_bytes = 0;
  double top5 = 0;
  double train_seconds = 0;   // the stages that made the model; 0: unknown
  double budget_bitops = 0;   // of the search; 0: none
  double fp_size_bytes = 0;
};

struct ReportInputs {
  std::string title = "limpq mixed-precision policy";
  quant::Indicators indicators;
  quant::Policy policy;
  // The search's criterion and alpha (limpq/search/criterion.h); empty and
  // unset: the file's defaults, as `limpq search` takes them. The charts
  // show the criterion's values, the objective the search minimised.
  std::string criterion;
  std::optional<double> alpha;
  std::string bitops_budget;        // "W3A3" or GBitOps; "" when none
  double cr_budget = 0;             // compression-ratio budget; 0 when none
  int64_t fixed_bits = 8;
  int64_t sweep_points = 25;
  std::vector<ReportAccuracy> accuracy;
};

// The HTML page. Every chart is an <svg class="chart" id="..."> with ids
// chart-bits, chart-indicators, chart-pareto, chart-budget and (with
// accuracy figures) chart-accuracy.
std::string render_report(const ReportInputs& inputs);

// The inputs of a `limpq run` folder: the indicators and policy its search
// used, its criterion, alpha and budgets (search.json), and its accuracy
// rows (summary.json, when the run got that far).
ReportInputs run_report_inputs(const std::string& run_dir);

// Writes <run_dir>/report.html from run_report_inputs; returns its path.
std::string write_run_report(const std::string& run_dir);

// `limpq report`: what to draw the page from (a run folder, or the files)
// and what to override in it.
struct ReportOptions {
  TORCH_ARG(std::string, run) = "";
  TORCH_ARG(std::string, indicators) = "";
  TORCH_ARG(std::string, policy) = "";
  TORCH_ARG(std::string, summary) = "";
  TORCH_ARG(std::string, bitops) = "";
  TORCH_ARG(std::optional<double>, cr) = std::nullopt;
  TORCH_ARG(std::string, criterion) = "";
  TORCH_ARG(std::optional<double>, alpha) = std::nullopt;
  TORCH_ARG(std::optional<int64_t>, fixed_bits) = std::nullopt;
  TORCH_ARG(std::string, out) = "";

 public:
  template <typename V>
  void visit(V&& v) {
    v("run", run_, "a `limpq run` folder (its search.json, policy.json and summary.json); the options below "
                   "override what it recorded");
    v("indicators", indicators_, "indicators file (instead of --run)");
    v("policy", policy_, "policy file (instead of --run)");
    v("summary", summary_, "accuracy rows: summary.json of `limpq run`");
    v("bitops", bitops_, "the BitOps budget to mark (empty: the run's)");
    v("cr", cr_, "the compression-ratio budget to mark (empty: the run's)");
    v("criterion", criterion_, "the search's criterion (see limpq search --criterion; empty: the run's, else the "
                               "file's default)");
    v("alpha", alpha_, "the search's alpha (empty: the run's, else the criterion's)");
    util::visit_fixed_bits(v, fixed_bits_);
    v("out", out_, "HTML file to write (empty: <run>/report.html, or report.html)");
  }
};

// Writes the page `options` describe; returns its path.
std::string write_report(const ReportOptions& options);

// Reads summary.json of `limpq run` into accuracy rows; sets
// inputs.bitops_budget from its uniform row when none is given.
void add_run_summary(const std::string& summary_path, ReportInputs& inputs);

}  // namespace limpq::deploy
