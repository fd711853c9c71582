// CIFAR-10 / CIFAR-100 binary batches; the first byte picks the variant.
#include "fuzz_support.h"
#include "limpq/data/readers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool cifar100 = data[0] & 1;
  const std::string& path = limpq::fuzz::input_file(data + 1, size - 1);
  limpq::fuzz::expect_clean([&] {
    auto dataset = limpq::data::parse_cifar({path}, cifar100 ? 2 : 1, cifar100 ? 100 : 10);
    for (int64_t i = 0; i < std::min<int64_t>(dataset->size(), 4); ++i) {
      dataset->image(i);
      dataset->label(i);
    }
  });
  return 0;
}
