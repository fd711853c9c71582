// ONNX files through the importer: the protobuf reader, the checker, every
// op converter and the probe forward pass. Any input must either import or
// be refused with a c10::Error; a crash or a sanitizer report is a bug.
#include "fuzz_support.h"
#include "limpq/models/onnx_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  limpq::fuzz::expect_clean([&] { limpq::models::import_onnx_bytes(bytes, "fuzz.onnx"); });
  return 0;
}
