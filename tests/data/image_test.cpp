#include "limpq/data/image.h"

#include <gtest/gtest.h>

#include "support/test_support.h"

namespace limpq::data {
namespace {

class ImageTest : public limpq::testing::SeededTest {};

Image ramp(int64_t h, int64_t w, int64_t c) {
  Image img(h, w, c);
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x)
      for (int64_t ch = 0; ch < c; ++ch) img.at(y, x, ch) = static_cast<uint8_t>(y * 16 + x + ch);
  return img;
}

TEST_F(ImageTest, RandomCropIsAShiftedWindowOfThePaddedImage) {
  const Image img = ramp(6, 6, 1);
  Rng rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    const Image out = random_crop(img, 6, 2, rng);
    ASSERT_EQ(out.height, 6);
    // Find the shift: every pixel is either padding (0) or img shifted by (dy, dx).
    bool matched = false;
    for (int dy = -2; dy <= 2 && !matched; ++dy) {
      for (int dx = -2; dx <= 2 && !matched; ++dx) {
        bool ok = true;
        for (int y = 0; y < 6 && ok; ++y)
          for (int x = 0; x < 6 && ok; ++x) {
            const int sy = y + dy, sx = x + dx;
            const uint8_t expect = (sy < 0 || sy >= 6 || sx < 0 || sx >= 6) ? 0 : img.at(sy, sx, 0);
            ok = out.at(y, x, 0) == expect;
          }
        matched = ok;
      }
    }
    EXPECT_TRUE(matched) << "trial " << trial;
  }
}

TEST_F(ImageTest, FlipMirrorsColumns) {
  const Image img = ramp(3, 4, 2);
  const Image out = horizontal_flip(img);
  EXPECT_EQ(out.at(1, 0, 1), img.at(1, 3, 1));
  EXPECT_EQ(horizontal_flip(out).pixels, img.pixels);
}

TEST_F(ImageTest, ResizeKeepsConstantsAndIdentity) {
  Image flat(5, 7, 3);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 77);
  const Image big = resize(flat, 11, 3);
  EXPECT_EQ(big.height, 11);
  EXPECT_EQ(big.width, 3);
  for (uint8_t v : big.pixels) EXPECT_EQ(v, 77);
  const Image img = ramp(4, 4, 1);
  EXPECT_EQ(resize(img, 4, 4).pixels, img.pixels);
  // Down-scaling by two averages 2x2 blocks (pixel centres aligned).
  const Image half = resize(img, 2, 2);
  EXPECT_EQ(half.at(0, 0, 0), (img.at(0, 0, 0) + img.at(0, 1, 0) + img.at(1, 0, 0) + img.at(1, 1, 0) + 2) / 4);
}

TEST_F(ImageTest, ShorterSideAndCenterCrop) {
  const Image img = ramp(10, 20, 1);
  const Image r = resize_shorter_side(img, 5);
  EXPECT_EQ(r.height, 5);
  EXPECT_EQ(r.width, 10);
  const Image c = center_crop(img, 4);
  EXPECT_EQ(c.at(0, 0, 0), img.at(3, 8, 0));
}

TEST_F(ImageTest, RandomResizedCropHasTheRequestedSize) {
  const Image img = ramp(40, 30, 3);
  Rng rng(1);
  for (int i = 0; i < 10; ++i) {
    const Image out = random_resized_crop(img, 16, rng);
    EXPECT_EQ(out.height, 16);
    EXPECT_EQ(out.width, 16);
    EXPECT_EQ(out.channels, 3);
  }
}

TEST_F(ImageTest, NormalizeWritesChwPlanes) {
  Image img(1, 2, 2);
  img.pixels = {0, 255, 51, 102};  // (x0: c0=0, c1=255), (x1: c0=51, c1=102)
  std::vector<float> out(4);
  to_normalized_chw(img, {0.5f, 0.0f}, {0.5f, 1.0f}, out.data());
  EXPECT_FLOAT_EQ(out[0], -1.0f);
  EXPECT_FLOAT_EQ(out[1], (0.2f - 0.5f) / 0.5f);
  EXPECT_FLOAT_EQ(out[2], 1.0f);
  EXPECT_FLOAT_EQ(out[3], 0.4f);
  EXPECT_THROW(to_normalized_chw(img, {0.5f}, {0.5f}, out.data()), c10::Error);
}

}  // namespace
}  // namespace limpq::data
