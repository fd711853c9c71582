// Policy files (limpq.policy/1), then the check against resnet20's layers.
#include "fuzz_support.h"
#include "limpq/quant/policy.h"

namespace {

const std::vector<std::string>& searchable() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (int stage = 1; stage <= 3; ++stage) {
      for (int block = 0; block < 3; ++block) {
        for (int conv = 1; conv <= 2; ++conv) {
          out.push_back("layer" + std::to_string(stage) + "." + std::to_string(block) + ".conv" + std::to_string(conv));
        }
      }
    }
    return out;
  }();
  return names;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = limpq::fuzz::input_file(data, size, ".json");
  limpq::fuzz::expect_clean([&] {
    const limpq::quant::Policy policy = limpq::quant::read_policy(path);
    limpq::quant::check_policy(policy, searchable(), {"conv1", "fc"}, path);
  });
  return 0;
}
