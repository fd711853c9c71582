// IDX files (MNIST / Fashion-MNIST), plain or gzip-compressed.
#include "fuzz_support.h"
#include "limpq/data/readers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = limpq::fuzz::input_file(data, size);
  limpq::fuzz::expect_clean([&] { limpq::data::read_idx(path); });
  return 0;
}
