// What a training run is given and what it returns: the options of
// `limpq train`, `finetune` and `indicators` (config sections data, model,
// train, run, quant, indicators), the result, and the hooks into the loop.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "limpq/data/datasets.h"
#include "limpq/models/model.h"
#include "limpq/train/evaluate.h"
#include "limpq/train/options.h"
#include "limpq/util/options.h"

namespace limpq::train {

struct TrainConfig {
  data::DataOptions data;
  models::ModelOptions model;
  OptimOptions optim;
  RunOptions run;
  FinetuneOptions quant;
  IndicatorOptions indicators;
  // Train the importance indicators jointly instead of the network
  // (`limpq indicators`); the result is out_dir/indicators.json.
  bool joint_indicators = false;

  // The config-file sections: data, model, train, run, quant, indicators.
  std::vector<util::ConfigSection> sections();
  nlohmann::ordered_json to_json();
};

struct TrainResult {
  bool completed = false;  // false when a hook stopped the run early
  EvalResult test;
  int64_t epochs = 0;
  double seconds = 0;
  double images_per_second = 0;  // training throughput of the last epoch
  std::string checkpoint;
  std::string indicators;        // indicators.json (joint indicator training)
  // Joint indicator training: test accuracy with every searchable layer at
  // each candidate bit-width.
  std::vector<std::pair<int64_t, EvalResult>> per_candidate;

  // What `limpq train`, `finetune` and `indicators` print (`only_layer`: the
  // indicators' --only-layer), and their --json line.
  std::string to_text(const std::string& only_layer = "") const;
  nlohmann::ordered_json to_json() const;
};

// Callbacks into the training loop.
struct TrainHooks {
  // Asked after each epoch's checkpoint is written; true ends the run there
  // (it can be resumed). Signal handling and tests use it.
  std::function<bool(int64_t epochs_done)> should_stop;
  // Called after every optimizer step (steps taken so far), before the
  // stop-request check; tests use it to interrupt at a chosen step.
  std::function<void(int64_t steps_done)> after_step;
  // Joint indicator training: evaluate every candidate bit-width on the test
  // set at the end (TrainResult::per_candidate), one pass each; false keeps
  // the first candidate's only (`limpq run`, which does not show the others).
  bool evaluate_every_candidate = true;
};

}  // namespace limpq::train
