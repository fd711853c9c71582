// Datasets of labelled 8-bit images, and the transforms that turn a sample
// into a normalised float tensor.
//
// A Dataset hands out decoded, untransformed images by index; the DataLoader
// (loader.h) applies a Transform on its worker threads and collates batches.
//
//   auto train = limpq::data::load_idx_dataset("/usr/share/datasets/fashion-mnist", Split::kTrain);
//   auto [fit, val] = limpq::data::split_holdout(train, 5000, /*seed=*/0);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "limpq/data/image.h"

namespace limpq::data {

enum class Split { kTrain, kTest };

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Image image(int64_t index) const = 0;
  virtual int64_t label(int64_t index) const = 0;
  virtual int64_t num_classes() const = 0;
  // Where the data came from, for messages and reports.
  virtual std::string description() const = 0;
};

// Images held in memory as one HWC uint8 buffer (IDX and CIFAR files).
class InMemoryDataset : public Dataset {
 public:
  InMemoryDataset(std::vector<uint8_t> pixels, std::vector<int64_t> labels, int64_t height,
                  int64_t width, int64_t channels, int64_t num_classes, std::string description);
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  Image image(int64_t index) const override;
  int64_t label(int64_t index) const override;
  int64_t num_classes() const override { return num_classes_; }
  std::string description() const override { return description_; }

 private:
  std::vector<uint8_t> pixels_;
  std::vector<int64_t> labels_;
  int64_t height_, width_, channels_, num_classes_;
  std::string description_;
};

// A view of some indices of another dataset.
class SubsetDataset : public Dataset {
 public:
  SubsetDataset(std::shared_ptr<const Dataset> parent, std::vector<int64_t> indices);
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  Image image(int64_t index) const override;
  int64_t label(int64_t index) const override;
  int64_t num_classes() const override { return parent_->num_classes(); }
  std::string description() const override;

 private:
  std::shared_ptr<const Dataset> parent_;
  std::vector<int64_t> indices_;
};

// Splits `dataset` by a seeded permutation into (rest, holdout) with
// `holdout_size` examples held out. The permutation depends only on `seed`.
std::pair<std::shared_ptr<const Dataset>, std::shared_ptr<const Dataset>> split_holdout(
    std::shared_ptr<const Dataset> dataset, int64_t holdout_size, uint64_t seed);

// The first `limit` examples of a seeded permutation (limit <= 0: all).
std::shared_ptr<const Dataset> take_subset(std::shared_ptr<const Dataset> dataset, int64_t limit,
                                           uint64_t seed);

// A seeded permutation of 0..n-1 (the same on every platform).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

// A per-sample pipeline: image steps, then normalisation to CHW floats.
class Transform {
 public:
  using Step = std::function<Image(const Image&, Rng&)>;

  Transform(std::vector<Step> steps, std::vector<float> mean, std::vector<float> std);

  Image apply_steps(const Image& img, Rng& rng) const;
  const std::vector<float>& mean() const { return mean_; }
  const std::vector<float>& std() const { return std_; }

  // Random crop with zero padding and horizontal flip (CIFAR / MNIST training).
  static Transform padded_crop_flip(int64_t size, int64_t padding, bool flip, std::vector<float> mean,
                                    std::vector<float> std);
  // Normalisation only (small-image evaluation).
  static Transform normalize_only(std::vector<float> mean, std::vector<float> std);
  // RandomResizedCrop(size) + flip (ImageNet training).
  static Transform imagenet_train(int64_t size, std::vector<float> mean, std::vector<float> std);
  // Resize(resize) + CenterCrop(size) (ImageNet evaluation).
  static Transform imagenet_eval(int64_t resize, int64_t size, std::vector<float> mean,
                                 std::vector<float> std);

  // This transform, then a resize to `size` x `size` (0: none) and, with
  // `channels` 3, a grayscale image's channel replicated (mean and std
  // with it; 0: as they are).
  Transform adapted(int64_t channels, int64_t size) const;

 private:
  std::vector<Step> steps_;
  std::vector<float> mean_, std_;
};

}  // namespace limpq::data
