#include "limpq/data/image.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>

namespace limpq::data {

Image random_crop(const Image& img, int64_t size, int64_t padding, Rng& rng) {
  const int64_t padded_h = img.height + 2 * padding;
  const int64_t padded_w = img.width + 2 * padding;
  TORCH_CHECK(size <= padded_h && size <= padded_w, "random_crop: crop size ", size,
              " exceeds the padded image ", padded_h, "x", padded_w);
  const int64_t top = std::uniform_int_distribution<int64_t>(0, padded_h - size)(rng);
  const int64_t left = std::uniform_int_distribution<int64_t>(0, padded_w - size)(rng);
  Image out(size, size, img.channels);  // zero-initialised: the padding
  for (int64_t y = 0; y < size; ++y) {
    const int64_t sy = top + y - padding;
    if (sy < 0 || sy >= img.height) continue;
    for (int64_t x = 0; x < size; ++x) {
      const int64_t sx = left + x - padding;
      if (sx < 0 || sx >= img.width) continue;
      for (int64_t c = 0; c < img.channels; ++c) out.at(y, x, c) = img.at(sy, sx, c);
    }
  }
  return out;
}

Image horizontal_flip(const Image& img) {
  Image out(img.height, img.width, img.channels);
  for (int64_t y = 0; y < img.height; ++y) {
    for (int64_t x = 0; x < img.width; ++x) {
      for (int64_t c = 0; c < img.channels; ++c) out.at(y, img.width - 1 - x, c) = img.at(y, x, c);
    }
  }
  return out;
}

Image resize(const Image& img, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(out_h > 0 && out_w > 0, "resize: output size must be positive, got ", out_h, "x", out_w);
  TORCH_CHECK(img.height > 0 && img.width > 0, "resize: empty input image");
  if (out_h == img.height && out_w == img.width) return img;
  Image out(out_h, out_w, img.channels);
  const double sy = static_cast<double>(img.height) / out_h;
  const double sx = static_cast<double>(img.width) / out_w;
  for (int64_t y = 0; y < out_h; ++y) {
    const double fy = std::max(0.0, (y + 0.5) * sy - 0.5);
    const int64_t y0 = std::min<int64_t>(static_cast<int64_t>(fy), img.height - 1);
    const int64_t y1 = std::min<int64_t>(y0 + 1, img.height - 1);
    const double wy = fy - y0;
    for (int64_t x = 0; x < out_w; ++x) {
      const double fx = std::max(0.0, (x + 0.5) * sx - 0.5);
      const int64_t x0 = std::min<int64_t>(static_cast<int64_t>(fx), img.width - 1);
      const int64_t x1 = std::min<int64_t>(x0 + 1, img.width - 1);
      const double wx = fx - x0;
      for (int64_t c = 0; c < img.channels; ++c) {
        const double top = img.at(y0, x0, c) * (1 - wx) + img.at(y0, x1, c) * wx;
        const double bottom = img.at(y1, x0, c) * (1 - wx) + img.at(y1, x1, c) * wx;
        const double v = top * (1 - wy) + bottom * wy;
        out.at(y, x, c) = static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L));
      }
    }
  }
  return out;
}

Image resize_shorter_side(const Image& img, int64_t size) {
  if (img.height <= img.width) {
    const int64_t w = static_cast<int64_t>(static_cast<double>(size) * img.width / img.height);
    return resize(img, size, w);
  }
  const int64_t h = static_cast<int64_t>(static_cast<double>(size) * img.height / img.width);
  return resize(img, h, size);
}

Image crop(const Image& img, int64_t top, int64_t left, int64_t height, int64_t width) {
  TORCH_CHECK(top >= 0 && left >= 0 && top + height <= img.height && left + width <= img.width,
              "crop: window (", top, ", ", left, ", ", height, "x", width, ") outside image ",
              img.height, "x", img.width);
  Image out(height, width, img.channels);
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* src = &img.pixels[((top + y) * img.width + left) * img.channels];
    std::copy(src, src + width * img.channels, &out.pixels[y * width * img.channels]);
  }
  return out;
}

Image center_crop(const Image& img, int64_t size) {
  TORCH_CHECK(size <= img.height && size <= img.width, "center_crop: size ", size,
              " exceeds image ", img.height, "x", img.width);
  const int64_t top = static_cast<int64_t>(std::round((img.height - size) / 2.0));
  const int64_t left = static_cast<int64_t>(std::round((img.width - size) / 2.0));
  return crop(img, top, left, size, size);
}

Image random_resized_crop(const Image& img, int64_t size, Rng& rng, double scale_min,
                          double scale_max) {
  const double area = static_cast<double>(img.height) * img.width;
  std::uniform_real_distribution<double> scale_dist(scale_min, scale_max);
  std::uniform_real_distribution<double> log_ratio_dist(std::log(3.0 / 4.0), std::log(4.0 / 3.0));
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * scale_dist(rng);
    const double ratio = std::exp(log_ratio_dist(rng));
    const int64_t w = std::lround(std::sqrt(target_area * ratio));
    const int64_t h = std::lround(std::sqrt(target_area / ratio));
    if (w > 0 && h > 0 && w <= img.width && h <= img.height) {
      const int64_t top = std::uniform_int_distribution<int64_t>(0, img.height - h)(rng);
      const int64_t left = std::uniform_int_distribution<int64_t>(0, img.width - w)(rng);
      return resize(crop(img, top, left, h, w), size, size);
    }
  }
  // Fallback: the largest centred crop whose ratio is within bounds.
  const double in_ratio = static_cast<double>(img.width) / img.height;
  int64_t w = img.width, h = img.height;
  if (in_ratio < 3.0 / 4.0) {
    h = std::lround(w / (3.0 / 4.0));
  } else if (in_ratio > 4.0 / 3.0) {
    w = std::lround(h * (4.0 / 3.0));
  }
  return resize(crop(img, (img.height - h) / 2, (img.width - w) / 2, h, w), size, size);
}

void to_normalized_chw(const Image& img, const std::vector<float>& mean, const std::vector<float>& std,
                       float* out) {
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == img.channels &&
                  static_cast<int64_t>(std.size()) == img.channels,
              "normalize: mean/std have ", mean.size(), "/", std.size(), " entries for an image with ",
              img.channels, " channels");
  const int64_t plane = img.height * img.width;
  for (int64_t c = 0; c < img.channels; ++c) {
    const float scale = 1.0f / (255.0f * std[c]);
    const float shift = mean[c] / std[c];
    float* dst = out + c * plane;
    for (int64_t i = 0; i < plane; ++i) dst[i] = img.pixels[i * img.channels + c] * scale - shift;
  }
}

}  // namespace limpq::data
