#include "limpq/cli/commands.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <filesystem>
#include <iostream>

#include "limpq/deploy/packed.h"
#include "limpq/deploy/report.h"
#include "limpq/dist/dist.h"
#include "limpq/quant/indicators.h"
#include "limpq/quant/policy.h"
#include "limpq/util/progress.h"

namespace limpq::cli {

void print(const Output& out, const JsonOutput& as) {
  if (!dist::is_main()) return;
  if (as.json) {
    std::cout << out.json.dump() << std::endl;
  } else {
    fmt::print("{}", out.text);
  }
}

Output train_result(const train::TrainResult& result, const std::string& only_layer) {
  return {result.to_json(), result.to_text(only_layer)};
}

EvalTarget eval_target(const EvalInput& input, const models::ModelOptions& model) {
  const std::string& onnx = model.onnx();
  const std::string& checkpoint = input.checkpoint;
  TORCH_CHECK(checkpoint.empty() != onnx.empty(), "eval: give --checkpoint FILE or --onnx FILE (one of them)");
  if (!onnx.empty()) return {train::onnx_checkpoint(onnx), onnx};
  if (deploy::is_packed_file(checkpoint)) return {deploy::read_packed(checkpoint), checkpoint};
  return {train::load_checkpoint(checkpoint), checkpoint};
}

Output evaluate(const EvalTarget& target, const train::EvalOptions& options, const data::DataOptions& data) {
  const auto r = train::run_eval(target.checkpoint, options, data);
  Output out;
  out.json = {{"checkpoint", target.path}, {"arch", target.checkpoint.arch}, {"split", options.split()}};
  out.json.update(r.to_json());
  if (options.bn_recalibration_batches() > 0) {
    out.text = fmt::format("batch-norm statistics re-estimated over {} training batches before evaluating\n",
                           options.bn_recalibration_batches());
  }
  out.text += fmt::format("{} on {} {} ({} images): top1 {:.2f}%  top5 {:.2f}%  loss {:.4f}\n",
                          target.checkpoint.arch, data.dataset(), options.split(), r.count, r.top1, r.top5, r.loss);
  out.text += r.cost_text();
  return out;
}

Output cost(const models::ModelOptions& model, const models::CostOptions& options) {
  const auto table = models::cost_table(model, options);
  return {table.to_json(/*with_layers=*/true), table.to_text()};
}

namespace {

quant::Indicators search_input(const SearchFiles& files) {
  TORCH_CHECK(!files.indicators.empty(), "search: give the indicators to search: --indicators FILE");
  auto indicators = quant::read_indicators(files.indicators);
  if (const auto& seed = files.random_objective) {
    TORCH_CHECK(*seed >= 0, "search: --random-objective takes a seed >= 0, got ", *seed);
    indicators = search::random_indicators(indicators, static_cast<uint64_t>(*seed));
  }
  return indicators;
}

Output sweep(const quant::Indicators& indicators, const SearchFiles& files, const search::SearchOptions& options,
             const search::SweepOptions& sweep) {
  TORCH_CHECK(options.bitops().empty(),
              "search: --sweep replaces --bitops; set the range with --sweep-from/--sweep-to");
  const auto points = search::run_sweep(indicators, options, sweep);
  const std::string prefix = search::write_sweep(files.out, points);
  Output out{search::sweep_to_json(points), search::sweep_text(points)};
  if (!prefix.empty()) out.text += fmt::format("sweep written to {}.csv and {}.json\n", prefix, prefix);
  return out;
}

}  // namespace

Output search(const SearchFiles& files, search::SearchOptions options, const search::SweepOptions& sweep_options) {
  if (!files.constraint.empty()) {
    options.extra({search::read_constraint_csv(files.constraint, files.constraint_budget)});
  }
  const auto indicators = search_input(files);
  if (sweep_options.points() > 0) return sweep(indicators, files, options, sweep_options);
  const auto r = search::run_search(indicators, options);
  const std::string& path = files.out;
  if (!path.empty()) quant::write_policy(path, r.policy);
  Output out{r.to_json(), search::search_text(r)};
  out.json["policy"] = path.empty() ? quant::policy_to_json(r.policy) : nlohmann::ordered_json(path);
  if (!path.empty()) out.text += fmt::format("policy written to {}\n", path);
  return out;
}

Output compare(const CompareArgs& files, const search::CompareOptions& options) {
  const auto c = search::compare_indicator_files(files.a, files.b, options);
  Output out{c.to_json(), search::comparison_to_text(c, fmt::format("{} [{}]", files.a, options.criterion_a()),
                                                      fmt::format("{} [{}]", files.b, options.criterion_b()))};
  out.json["a"] = {{"file", files.a}, {"criterion", options.criterion_a()}};
  out.json["b"] = {{"file", files.b}, {"criterion", options.criterion_b()}};
  return out;
}

Output sensitivity(train::SensitivityConfig config, const SensitivityOutput& files) {
  util::Stopwatch clock;
  config.partial_path = files.out + ".partial";
  const auto indicators = train::run_sensitivity(config);
  if (!dist::is_main()) return {};
  quant::write_indicators(files.out, indicators);
  std::filesystem::remove(config.partial_path);
  const double seconds = clock.seconds();
  return {{{"indicators", files.out}, {"seconds", seconds}},
          train::sensitivity_text(indicators) +
              fmt::format("written to {}  [{}]\n", files.out, util::format_duration(seconds))};
}

Output pipeline(const train::PipelineConfig& config) {
  const auto result = train::run_pipeline(config);
  const std::string report = deploy::write_run_report(config.run.out_dir());
  Output out{result.to_json(), train::pipeline_table(result)};
  out.json["report"] = report;
  out.text += fmt::format("policy: {} (average bits: weights {:.2f}, activations {:.2f})\nreport: {}\n", result.policy,
                          result.search.average_weight_bits, result.search.average_act_bits, report);
  return out;
}

}  // namespace limpq::cli
