// Extra-constraint CSV files (layer,weight_bits,act_bits,cost) for the search.
#include "fuzz_support.h"
#include "limpq/search/search.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = limpq::fuzz::input_file(data, size, ".csv");
  limpq::fuzz::expect_clean([&] { limpq::search::read_constraint_csv(path, 1.0); });
  return 0;
}
