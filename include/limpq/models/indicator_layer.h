// A layer's entry in an indicators file (include/limpq/quant/indicators.h),
// before any indicator value: its name, kind, whether it is searched, and its
// MACs and parameters. The joint run, the sensitivity methods and the
// synthetic instances all start their files from it.
#pragma once

#include "limpq/models/quantized.h"
#include "limpq/quant/indicators.h"

namespace limpq::models {

quant::IndicatorLayer indicator_layer(const LayerInfo& layer);

}  // namespace limpq::models
