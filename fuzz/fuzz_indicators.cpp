// Indicators files (limpq.indicators/1), then the policy search on them:
// the search must reject or solve whatever numbers the file holds.
#include "fuzz_support.h"
#include "limpq/quant/indicators.h"
#include "limpq/search/search.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = limpq::fuzz::input_file(data, size, ".json");
  limpq::fuzz::expect_clean([&] {
    const limpq::quant::Indicators indicators = limpq::quant::read_indicators(path);
    if (indicators.layers.size() > 64) return;  // bound the work per input
    limpq::search::SearchOptions options;
    options.bitops("W4A4").cr(8).solver("dp").time_limit(1.0);
    limpq::search::run_search(indicators, options);
  });
  return 0;
}
