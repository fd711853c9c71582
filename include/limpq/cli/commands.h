#pragma once
// What each limpq subcommand does once its flags are parsed: read the files
// it names, call the library, write what it writes, and say what it found,
// both as text for a terminal and as JSON for --json. tools/limpq/main.cpp
// binds flags to the options structs and prints one of the two.
//
//   cli::print(cli::search(files, search_options, sweep_options), json_output);

#include <nlohmann/json.hpp>
#include <string>

#include "limpq/cli/options.h"
#include "limpq/data/dataset.h"
#include "limpq/models/cost.h"
#include "limpq/search/compare.h"
#include "limpq/search/search.h"
#include "limpq/train/checkpoint.h"
#include "limpq/train/evaluate.h"
#include "limpq/train/pipeline.h"
#include "limpq/train/sensitivity.h"
#include "limpq/train/trainer.h"

namespace limpq::cli {

// A command's result in its two forms.
struct Output {
  nlohmann::ordered_json json;
  std::string text;
};

// The JSON as one line when `as.json`, else the text; nothing on the
// workers of a data-parallel run other than rank 0.
void print(const Output& out, const JsonOutput& as);

// train, finetune, indicators: the trainer's result (`only_layer`: the
// indicators of one layer only).
Output train_result(const train::TrainResult& result, const std::string& only_layer);

// eval: what to evaluate, from --checkpoint (a checkpoint or a packed model)
// or --onnx (the network's own weights); exactly one of the two.
struct EvalTarget {
  train::Checkpoint checkpoint;
  std::string path;
};
EvalTarget eval_target(const EvalInput& input, const models::ModelOptions& model);
Output evaluate(const EvalTarget& target, const train::EvalOptions& options, const data::DataOptions& data);

// cost: the per-layer cost table of a model.
Output cost(const models::ModelOptions& model, const models::CostOptions& options);

// search: the policy for a budget (written to files.out when given), or with
// sweep.points() > 0 the sweep over budgets (<out>.csv and <out>.json).
Output search(const SearchFiles& files, search::SearchOptions options, const search::SweepOptions& sweep);

// compare-indicators: rank agreement of two indicators files.
Output compare(const CompareArgs& files, const search::CompareOptions& options);

// sensitivity: the criterion, written to files.out (its measurements kept
// beside it in <out>.partial while it runs).
Output sensitivity(train::SensitivityConfig config, const SensitivityOutput& files);

// run: the whole pipeline and its HTML report.
Output pipeline(const train::PipelineConfig& config);

}  // namespace limpq::cli
