// YAML configs: the sections of `limpq train/finetune/indicators` and of
// `limpq run`, filled through the same loader the CLI uses.
#include "fuzz_support.h"
#include "limpq/train/pipeline.h"
#include "limpq/train/trainer.h"
#include "limpq/util/options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = limpq::fuzz::input_file(data, size, ".yaml");
  limpq::fuzz::expect_clean([&] {
    limpq::train::TrainConfig config;
    limpq::util::load_config(path, config.sections());
    config.to_json().dump();
  });
  limpq::fuzz::expect_clean([&] {
    limpq::train::PipelineConfig config;
    limpq::util::load_config(path, config.sections());
  });
  return 0;
}
