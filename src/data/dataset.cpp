#include "limpq/data/dataset.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <numeric>

namespace limpq::data {

InMemoryDataset::InMemoryDataset(std::vector<uint8_t> pixels, std::vector<int64_t> labels,
                                 int64_t height, int64_t width, int64_t channels,
                                 int64_t num_classes, std::string description)
    : pixels_(std::move(pixels)),
      labels_(std::move(labels)),
      height_(height),
      width_(width),
      channels_(channels),
      num_classes_(num_classes),
      description_(std::move(description)) {
  TORCH_INTERNAL_ASSERT(static_cast<int64_t>(pixels_.size()) ==
                        static_cast<int64_t>(labels_.size()) * height_ * width_ * channels_);
  for (size_t i = 0; i < labels_.size(); ++i) {
    TORCH_CHECK(labels_[i] >= 0 && labels_[i] < num_classes_, description_, ": label ", labels_[i],
                " of example ", i, " is outside 0..", num_classes_ - 1);
  }
}

Image InMemoryDataset::image(int64_t index) const {
  TORCH_CHECK(index >= 0 && index < size(), description_, ": index ", index, " out of range");
  Image img(height_, width_, channels_);
  const int64_t n = height_ * width_ * channels_;
  std::copy_n(pixels_.begin() + index * n, n, img.pixels.begin());
  return img;
}

int64_t InMemoryDataset::label(int64_t index) const {
  TORCH_CHECK(index >= 0 && index < size(), description_, ": index ", index, " out of range");
  return labels_[index];
}

SubsetDataset::SubsetDataset(std::shared_ptr<const Dataset> parent, std::vector<int64_t> indices)
    : parent_(std::move(parent)), indices_(std::move(indices)) {
  for (int64_t i : indices_) {
    TORCH_CHECK(i >= 0 && i < parent_->size(), parent_->description(), ": subset index ", i,
                " out of range");
  }
}

Image SubsetDataset::image(int64_t index) const { return parent_->image(indices_.at(index)); }
int64_t SubsetDataset::label(int64_t index) const { return parent_->label(indices_.at(index)); }
std::string SubsetDataset::description() const {
  return parent_->description() + " [" + std::to_string(indices_.size()) + " of " +
         std::to_string(parent_->size()) + "]";
}

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  // Fisher-Yates with an explicit generator: std::shuffle's algorithm is
  // implementation-defined, this is not.
  Rng rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

std::pair<std::shared_ptr<const Dataset>, std::shared_ptr<const Dataset>> split_holdout(
    std::shared_ptr<const Dataset> dataset, int64_t holdout_size, uint64_t seed) {
  TORCH_CHECK(holdout_size >= 0 && holdout_size < dataset->size(), "validation split: size ",
              holdout_size, " must be in [0, ", dataset->size(), ") for ", dataset->description());
  if (holdout_size == 0) return {dataset, nullptr};
  std::vector<int64_t> perm = seeded_permutation(dataset->size(), seed);
  std::vector<int64_t> holdout(perm.end() - holdout_size, perm.end());
  std::vector<int64_t> rest(perm.begin(), perm.end() - holdout_size);
  std::sort(holdout.begin(), holdout.end());
  std::sort(rest.begin(), rest.end());
  return {std::make_shared<SubsetDataset>(dataset, std::move(rest)),
          std::make_shared<SubsetDataset>(dataset, std::move(holdout))};
}

std::shared_ptr<const Dataset> take_subset(std::shared_ptr<const Dataset> dataset, int64_t limit,
                                           uint64_t seed) {
  if (limit <= 0 || limit >= dataset->size()) return dataset;
  std::vector<int64_t> perm = seeded_permutation(dataset->size(), seed);
  perm.resize(limit);
  std::sort(perm.begin(), perm.end());
  return std::make_shared<SubsetDataset>(std::move(dataset), std::move(perm));
}

Transform::Transform(std::vector<Step> steps, std::vector<float> mean, std::vector<float> std)
    : steps_(std::move(steps)), mean_(std::move(mean)), std_(std::move(std)) {
  TORCH_CHECK(mean_.size() == std_.size(), "transform: mean has ", mean_.size(),
              " channels but std has ", std_.size());
  for (float s : std_) TORCH_CHECK(s > 0, "transform: std must be positive, got ", s);
}

Image Transform::apply_steps(const Image& img, Rng& rng) const {
  Image out = img;
  for (const auto& step : steps_) out = step(out, rng);
  return out;
}

Transform Transform::padded_crop_flip(int64_t size, int64_t padding, bool flip,
                                      std::vector<float> mean, std::vector<float> std) {
  std::vector<Step> steps;
  steps.emplace_back([size, padding](const Image& img, Rng& rng) {
    return random_crop(img, size, padding, rng);
  });
  if (flip) {
    steps.emplace_back([](const Image& img, Rng& rng) {
      return std::bernoulli_distribution(0.5)(rng) ? horizontal_flip(img) : img;
    });
  }
  return Transform(std::move(steps), std::move(mean), std::move(std));
}

Transform Transform::normalize_only(std::vector<float> mean, std::vector<float> std) {
  return Transform({}, std::move(mean), std::move(std));
}

Transform Transform::imagenet_train(int64_t size, std::vector<float> mean, std::vector<float> std) {
  std::vector<Step> steps;
  steps.emplace_back([size](const Image& img, Rng& rng) { return random_resized_crop(img, size, rng); });
  steps.emplace_back([](const Image& img, Rng& rng) {
    return std::bernoulli_distribution(0.5)(rng) ? horizontal_flip(img) : img;
  });
  return Transform(std::move(steps), std::move(mean), std::move(std));
}

Transform Transform::imagenet_eval(int64_t resize, int64_t size, std::vector<float> mean,
                                   std::vector<float> std) {
  std::vector<Step> steps;
  steps.emplace_back([resize, size](const Image& img, Rng&) {
    return center_crop(resize_shorter_side(img, resize), size);
  });
  return Transform(std::move(steps), std::move(mean), std::move(std));
}

Transform Transform::adapted(int64_t channels, int64_t size) const {
  TORCH_CHECK(size >= 0, "transform: image size must be >= 0, got ", size);
  TORCH_CHECK(channels == 0 || channels == 3 || channels == static_cast<int64_t>(mean_.size()),
              "transform: channels must be 3 (a grayscale image replicated) or the dataset's own ", mean_.size(),
              ", got ", channels);
  Transform out = *this;
  if (size > 0) {
    out.steps_.emplace_back([size](const Image& img, Rng&) {
      return img.height == size && img.width == size ? img : resize(img, size, size);
    });
  }
  if (channels == 3 && mean_.size() == 1) {
    out.steps_.emplace_back([](const Image& img, Rng&) {
      Image rgb(img.height, img.width, 3);
      for (size_t i = 0; i < img.pixels.size(); ++i) {
        for (size_t c = 0; c < 3; ++c) rgb.pixels[3 * i + c] = img.pixels[i];
      }
      return rgb;
    });
    out.mean_.assign(3, mean_[0]);
    out.std_.assign(3, std_[0]);
  }
  return out;
}

}  // namespace limpq::data
