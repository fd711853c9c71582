// Packed models (limpq.packed/1). The CRC check would reject nearly every
// mutation, so inputs are re-sealed with a valid CRC before parsing: the
// fuzzer then reaches the header and payload validation behind it.
#include "fuzz_support.h"
#include "limpq/deploy/packed.h"
#include "limpq/util/checksum.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (bytes.size() >= 4) {
    const uint32_t crc = limpq::util::Crc32().update(bytes.data(), bytes.size() - 4).value();
    for (int i = 0; i < 4; ++i) bytes[bytes.size() - 4 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  }
  limpq::fuzz::expect_clean([&] { limpq::deploy::parse_packed(bytes, "fuzz.lpq"); });
  return 0;
}
