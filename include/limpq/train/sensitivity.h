// Layer sensitivity criteria other than the learned indicators, written in
// the indicators format so `limpq search` and `limpq compare-indicators`
// read them unchanged. Both are searched with alpha 1 (the file says so).
//
// --method drop: the measured single-layer sensitivity, the classic
// one-at-a-time baseline and the ground truth that criteria are compared
// with. For each searchable layer l, candidate b and tensor (weights, input
// activations): that tensor alone quantized at b bits (initial LSQ steps,
// activations calibrated on one training batch), every other layer at full
// precision; batch-norm statistics re-estimated over bn_batches training
// batches; the loss increase (or top-1 drop) on the validation split against
// the full-precision network treated alike. Post-training by default;
// qat_steps > 0 trains that many quantization-aware steps first (the
// short-QAT variant, the full-precision baseline trained alike). Costs
// 2 * layers * candidates evaluations. A stop request (Ctrl-C, SIGTERM)
// ends the run after the current measurement with util::Interrupted; with
// partial_path set, nothing measured is lost.
//
// --method hessian: the Hessian-trace criterion of HAWQ-V3.
// For each searchable layer l and candidate bit-width b:
//   weights:     Tr(H_W) / n_W * ||Q_b(W) - W||^2
//   activations: Tr(H_A) / n_A * E ||Q_b(A) - A||^2
// where H_W is the Hessian of the loss with respect to the layer's weight,
// H_A with respect to its input activation (a batch of it), n the element
// counts, Q_b LSQ quantization with the initial step rule (LIMPQ.md section
// 2: the step fine-tuning starts from), and the expectations over the
// calibration batches. Both halves estimate the loss increase of quantizing
// that tensor alone, so search it with alpha = 1. Traces come from
// Hutchinson's estimator Tr(H) ~ mean_v v^T H v over Rademacher vectors v,
// Hv by double backward.
//
//   SensitivityConfig config;
//   config.model.weights("runs/fp/checkpoint.pt");
//   quant::Indicators ind = run_sensitivity(config);
//   quant::write_indicators("hessian.json", ind);
#pragma once

#include <ATen/core/Generator.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <string>
#include <vector>

#include "limpq/data/datasets.h"
#include "limpq/models/model.h"
#include "limpq/quant/indicators.h"
#include "limpq/util/options.h"
#include "limpq/util/option_groups.h"

namespace limpq::train {

// Hutchinson estimates of Tr(d^2 loss / d t^2) for each tensor t in `wrt`
// (each block of the Hessian on its own), from `probes` Rademacher vectors
// and one double backward each. `loss` must be a scalar whose graph reaches
// every tensor in `wrt`.
std::vector<double> hutchinson_traces(const torch::Tensor& loss, const std::vector<torch::Tensor>& wrt,
                                      int64_t probes, at::Generator generator);

struct SensitivityOptions {
  TORCH_ARG(std::string, method) = "hessian";
  TORCH_ARG(std::vector<int64_t>, candidates) = std::vector<int64_t>{6, 5, 4, 3, 2};
  // hessian: calibration batches from the training set (eval transform,
  // shuffled by the seed) and Hutchinson probes per batch.
  TORCH_ARG(int64_t, batches) = 4;
  TORCH_ARG(int64_t, probes) = 16;
  // drop: where and what is measured, batch-norm re-estimation, and the
  // short-QAT variant's steps and learning rate.
  TORCH_ARG(std::string, split) = "val";
  TORCH_ARG(std::string, metric) = "loss";
  TORCH_ARG(int64_t, bn_batches) = 20;
  TORCH_ARG(int64_t, qat_steps) = 0;
  TORCH_ARG(double, qat_lr) = 0.01;
  // Layers kept out of the search; empty: the first conv and the last layer.
  TORCH_ARG(std::vector<std::string>, fixed_layers) = {};

 public:
  template <typename V>
  void visit(V&& v) {
    v("method", method_, "sensitivity criterion: drop (measured, one tensor at a time) | hessian");
    v("candidates", candidates_, "candidate bit-widths, e.g. 6,5,4,3,2");
    v("batches", batches_, "hessian: calibration batches from the training set");
    v("probes", probes_, "hessian: Hutchinson probes per batch");
    v("split", split_, "drop: split the loss is measured on: val (needs --val-size) | test");
    v("metric", metric_, "drop: loss (increase) | top1 (drop in points)");
    v("bn_batches", bn_batches_, "drop: training batches to re-estimate batch-norm statistics (0: keep)");
    v("qat_steps", qat_steps_, "drop: quantization-aware steps before measuring (0: post-training)");
    v("qat_lr", qat_lr_, "drop: learning rate of those steps");
    util::visit_fixed_layers(v, fixed_layers_);
  }
};

struct SensitivityConfig {
  data::DataOptions data;
  models::ModelOptions model;
  SensitivityOptions sensitivity;
  std::string device = "cpu";
  int64_t threads = 0;
  int64_t seed = 0;
  // drop: a file that keeps each measurement as it is taken (written
  // atomically), so that a run stopped by Ctrl-C / SIGTERM or killed
  // continues where it was when run again with the same settings ("": none).
  std::string partial_path;

  // Where it runs (the flags of `limpq sensitivity`; data, model and
  // sensitivity have their own lists).
  template <typename V>
  void visit(V&& v) {
    util::visit_compute(v, device, threads);
    v("seed", seed, "seed of the calibration order and the probes");
  }
};

// The criterion for every searchable layer and candidate of the model in
// `config` (full-precision weights from config.model.weights()), as
// indicators: weight_steps / act_steps hold the criterion values, the
// provenance names the method and the raw traces. Data-parallel runs split
// the calibration batches across workers and sum the estimates.
quant::Indicators run_sensitivity(const SensitivityConfig& config);

// What `limpq sensitivity` prints: each searchable layer's criterion at
// every candidate (weights | activations), with its Hessian traces.
std::string sensitivity_text(const quant::Indicators& indicators);

}  // namespace limpq::train
