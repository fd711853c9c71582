// The whole LIMPQ pipeline in one call (`limpq run CONFIG.yaml`):
// full-precision training (or given weights) -> joint indicator training (or
// a measured criterion, search.criterion drop | hessian) ->
// policy search -> fine-tuning under the policy (and under uniform precision
// at the same budget, for comparison) -> evaluation. Every stage writes into
// its own folder under run.out_dir and is reused when it has finished, or
// resumed from its checkpoint when it was interrupted.
//
//   PipelineConfig config;
//   util::load_config("configs/quickstart.yaml", config.sections());
//   PipelineResult result = run_pipeline(config);
#pragma once

#include <string>
#include <vector>

#include "limpq/search/search.h"
#include "limpq/train/trainer.h"

namespace limpq::train {

// Section `indicators`: what to train and how.
struct IndicatorStageOptions {
  IndicatorOptions indicators;
  OptimOptions optim = indicator_recipe();
  template <typename V>
  void visit(V&& v) {
    indicators.visit(v);
    optim.visit(v);
  }
};

// Section `search`: limpq search's options (search::SearchOptions), with a
// W3A3-level BitOps budget by default. The fixed layers' bits are
// finetune.fixed_bits, the bits they are fine-tuned at.
struct SearchStageOptions : search::SearchOptions {
  SearchStageOptions() { bitops("W3A3"); }
  template <typename V>
  void visit(V&& v) {
    SearchOptions::visit(util::except({"fixed_bits"}, v));
  }
};

// Section `finetune`: the QAT recipe (finetune_recipe(), as `limpq
// finetune` has it) and quantization settings.
struct FinetuneStageOptions {
  models::QuantizeOptions quantize;
  OptimOptions optim = finetune_recipe();
  // Also fine-tune uniform precision at the budget (when it is WxAy).
  bool compare_uniform = true;
  template <typename V>
  void visit(V&& v) {
    // The pipeline fine-tunes with indicators.fixed_layers (the layers the
    // search left out): finetune.fixed_layers is not a key here.
    quantize.visit(util::except({"fixed_layers"}, v));
    optim.visit(v);
    v("compare_uniform", compare_uniform, "also fine-tune uniform precision at a WxAy budget");
  }
};

struct PipelineConfig {
  data::DataOptions data;
  models::ModelOptions model;  // model.weights given: no full-precision stage
  OptimOptions train = train_recipe();  // the full-precision stage
  RunOptions run = RunOptions().out_dir("runs/pipeline");
  IndicatorStageOptions indicators;
  SearchStageOptions search;
  FinetuneStageOptions finetune;

  std::vector<util::ConfigSection> sections();
};

struct PipelineRow {
  std::string name;
  std::string checkpoint;
  EvalResult test;
  double train_seconds = 0;  // the stages that made this model (the policy: indicators, search, fine-tuning)
};

// How long a stage took when it ran (a reused stage: when it first ran).
// The pipeline's stages, by identity (their titles are for people).
enum class Stage { kFullPrecision, kCriterion, kSearch, kFinetunePolicy, kFinetuneUniform, kEvaluation };

struct StageTime {
  Stage stage;
  std::string name;
  double seconds = 0;
  bool reused = false;
};

struct PipelineResult {
  std::vector<PipelineRow> rows;  // full precision, uniform, searched policy
  std::string policy;
  std::string indicators;
  search::SearchResult search;
  std::vector<StageTime> stages;
  // The budgets of the search (0: none), whole network.
  double budget_bitops = 0, budget_size_bits = 0;

  // {policy, rows: [{name, train_seconds, loss, top1, ...}]}: `limpq run --json`.
  nlohmann::ordered_json to_json() const;
};

// The final table of a run: per model its BitOps and weight size against
// the budget, top-1 and top-5, and the time its stages took; then each
// stage's time.
std::string pipeline_table(const PipelineResult& result);

// The config file of `limpq run`; a file without any section is refused
// (it would run the whole default pipeline).
PipelineConfig load_pipeline_config(const std::string& path);

PipelineResult run_pipeline(PipelineConfig config);

}  // namespace limpq::train
