// Image-folder entries: JPEG decoding and the evaluation transform.
#include "fuzz_support.h"
#include "limpq/data/image.h"
#include "limpq/data/readers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  limpq::fuzz::expect_clean([&] {
    const limpq::data::Image img = limpq::data::decode_jpeg(bytes, "fuzz.jpg");
    if (img.width * img.height > (1 << 22)) return;  // decoding was the point; skip huge resizes
    const limpq::data::Image small = limpq::data::center_crop(limpq::data::resize_shorter_side(img, 8), 8);
    std::vector<float> chw(3 * 8 * 8);
    limpq::data::to_normalized_chw(small, {0.5f, 0.5f, 0.5f}, {0.25f, 0.25f, 0.25f}, chw.data());
  });
  return 0;
}
