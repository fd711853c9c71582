// What the search minimises: forms of the learned indicators.
//
// The paper's criterion (LIMPQ.md section 6) is the learned step itself,
// I_a(l, b_a) + alpha * I_w(l, b_w). A step is in the units of its tensor:
// a layer whose weights are small has small steps at every bit-width, so the
// raw step ranks layers partly by their tensors' scale. The other forms
// divide that out, using the per-tensor statistics the joint run records
// (include/limpq/quant/indicators.h, "stats"):
//
//   kStep      s                          the paper's indicator (alpha 2)
//   kRelative  s / rms                    the step in units of its tensor's
//                                         root mean square
//   kNoise     s^2 / (12 rms^2)           the relative power of the uniform
//                                         rounding noise the step implies
//   kFisher    Tr(F) s^2 / 24             that noise weighted by the trace of
//                                         the tensor's Fisher information: a
//                                         second-order estimate of the loss
//                                         increase the step's rounding noise
//                                         causes
//   kFisherError  1/2 delta^T F delta, delta = Q_s(x) - x
//                                         the tensor's measured quantization
//                                         error at the learned step (clipping
//                                         included), weighted by the Fisher
//                                         (weights: the tensor's whole block;
//                                         activations: the diagonal): the same
//                                         second-order estimate without the
//                                         uniform-noise assumption
//                                         (include/limpq/train/layer_stats.h)
//
// The default criterion is kFisherError with alpha 0.25 when the file has
// the per-bit errors (indicators trained by this version), kRelative with
// alpha 0.25 when it has only the older statistics, else the paper's kStep
// with alpha 2. fisher-error ranks layers with their measured single-layer
// drop on resnet20 and mobilenet_v2 (Spearman +0.60 and +0.62, where
// relative has +0.03 and +0.23) and its policies fine-tuned best of the
// learned forms on the validation split (BENCHMARKS.md, "Which criterion
// ranks layers" and "Accuracy study").
//
// The first four forms are, per tensor, increasing functions of the step, so
// a non-monotone point of the steps is a non-monotone point of each of them;
// kFisherError is measured at each bit-width and need not follow the steps.
//
//   Indicators values = apply_criterion(read_indicators("ind.json"), Criterion::kFisher);
//   double alpha = default_alpha(Criterion::kFisher, values);   // 0.25
#pragma once

#include <optional>
#include <string>

#include "limpq/quant/indicators.h"

namespace limpq::search {

enum class Criterion { kStep, kRelative, kNoise, kFisher, kFisherError };

// "step" | "relative" | "noise" | "fisher" | "fisher-error"; anything else is
// an error listing them.
Criterion parse_criterion(const std::string& name);
// The criterion called `name`, if there is one.
std::optional<Criterion> find_criterion(const std::string& name);
// Every criterion's name, comma-separated.
std::string criterion_names();
std::string to_string(Criterion criterion);

// The indicators with every searchable layer's weight_steps / act_steps
// replaced by the criterion's values. kStep returns them unchanged; the
// others need every searchable layer's "stats", kFisherError their
// per-bit-width errors too (an error names the first layer without them).
// The provenance records the criterion and keeps the original provenance
// under "from".
quant::Indicators apply_criterion(const quant::Indicators& indicators, Criterion criterion);

// The criterion a search uses when none is given: kFisherError when every
// searchable layer has statistics with per-bit errors, kRelative when they
// have statistics without them, else kStep.
Criterion default_criterion(const quant::Indicators& indicators);

// The alpha a search uses when none is given: the file's provenance
// "search_alpha" when it has one (criteria written by `limpq sensitivity`:
// 1; the scale-free forms from apply_criterion: 0.25), else 2 (kStep, the
// authors' default).
double default_alpha(Criterion criterion, const quant::Indicators& indicators);

}  // namespace limpq::search
