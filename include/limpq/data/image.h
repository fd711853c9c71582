// An 8-bit image in height x width x channels (HWC) layout, and the
// per-sample transforms of the standard training recipes, written on plain
// buffers so that loader worker threads run them without touching ATen.
//
//   limpq::data::Image img = dataset.image(i);
//   img = limpq::data::random_resized_crop(img, 224, rng);
//   if (coin(rng)) img = limpq::data::horizontal_flip(img);
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace limpq::data {

using Rng = std::mt19937_64;

struct Image {
  int64_t height = 0;
  int64_t width = 0;
  int64_t channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels, HWC

  Image() = default;
  Image(int64_t h, int64_t w, int64_t c) : height(h), width(w), channels(c), pixels(h * w * c) {}
  uint8_t& at(int64_t y, int64_t x, int64_t ch) { return pixels[(y * width + x) * channels + ch]; }
  uint8_t at(int64_t y, int64_t x, int64_t ch) const { return pixels[(y * width + x) * channels + ch]; }
};

// Zero-pads every side by `padding`, then takes a random size x size window
// (the CIFAR / MNIST augmentation).
Image random_crop(const Image& img, int64_t size, int64_t padding, Rng& rng);

Image horizontal_flip(const Image& img);

// Bilinear resize to exactly out_h x out_w (pixel centres aligned, as
// torchvision's antialias-free bilinear resize).
Image resize(const Image& img, int64_t out_h, int64_t out_w);

// Resizes so that the shorter side becomes `size`, keeping the aspect ratio.
Image resize_shorter_side(const Image& img, int64_t size);

Image center_crop(const Image& img, int64_t size);

Image crop(const Image& img, int64_t top, int64_t left, int64_t height, int64_t width);

// torchvision's RandomResizedCrop: area fraction in [scale_min, scale_max],
// log-uniform aspect ratio in [3/4, 4/3], ten tries then a center crop.
Image random_resized_crop(const Image& img, int64_t size, Rng& rng, double scale_min = 0.08,
                          double scale_max = 1.0);

// Writes the image as CHW floats, (x / 255 - mean[c]) / std[c].
void to_normalized_chw(const Image& img, const std::vector<float>& mean, const std::vector<float>& std,
                       float* out);

}  // namespace limpq::data
