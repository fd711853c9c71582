// Built-in datasets by name, with their standard transforms.
//
//   name            root default                           images
//   fashion-mnist   /usr/share/datasets/fashion-mnist      1x28x28, 10 classes
//   mnist           (required)                             1x28x28, 10 classes
//   cifar10         (required)                             3x32x32, 10 classes
//   cifar100        (required)                             3x32x32, 100 classes
//   image-folder    (required; root/train, root/val)       3x224x224 (image_size)
//
// data.image_size and data.channels adapt a dataset to a network's input
// (an imported ONNX network fixes it): Fashion-MNIST at image_size 32 and
// channels 3 is 3x32x32, the gray replicated.
//
//   auto data = limpq::data::make_data(DataOptions().dataset("fashion-mnist").val_size(5000), seed);
//   DataLoader train(data.train, data.train_transform, ...);
#pragma once

#include <torch/arg.h>

#include <memory>
#include <string>
#include <vector>

#include "limpq/data/dataset.h"

namespace limpq::data {

struct DataOptions {
  TORCH_ARG(std::string, dataset) = "fashion-mnist";
  // Folder holding the files; empty: the dataset's default location.
  TORCH_ARG(std::string, root) = "";
  TORCH_ARG(int64_t, batch_size) = 128;
  TORCH_ARG(int64_t, eval_batch_size) = 256;
  TORCH_ARG(int64_t, workers) = 2;
  // Training examples held out for validation (0: none).
  TORCH_ARG(int64_t, val_size) = 0;
  // Train on the first N examples of a seeded permutation (0: all).
  TORCH_ARG(int64_t, limit) = 0;
  // Evaluate on the first N test examples of a seeded permutation (0: all).
  TORCH_ARG(int64_t, test_limit) = 0;
  TORCH_ARG(bool, augment) = true;
  // The side of the images the network sees: image-folder datasets crop to
  // it (0: 224); the others are resized to it (0: their own size).
  TORCH_ARG(int64_t, image_size) = 0;
  // Image-folder datasets: the evaluation resize before the center crop.
  TORCH_ARG(int64_t, resize_size) = 256;
  // Channels the network takes: 3 replicates a grayscale dataset's channel
  // (0: the dataset's own).
  TORCH_ARG(int64_t, channels) = 0;

 public:
  template <typename V>
  void visit(V&& v) {
    v("dataset", dataset_, "fashion-mnist | mnist | cifar10 | cifar100 | image-folder");
    v("root", root_, "dataset folder (default: the dataset's standard location)");
    v("batch_size", batch_size_, "training batch size (per process)");
    v("eval_batch_size", eval_batch_size_, "evaluation batch size");
    v("workers", workers_, "data loading threads");
    v("val_size", val_size_, "training examples held out for validation");
    v("limit", limit_, "train on this many examples (0: all)");
    v("test_limit", test_limit_, "evaluate on this many test examples (0: all)");
    v("augment", augment_, "standard training augmentation");
    v("image_size", image_size_,
      "side of the network's input: image-folder crop size (0: 224), other datasets resized to it (0: their own)");
    v("resize_size", resize_size_, "image-folder evaluation resize");
    v("channels", channels_, "channels of the network's input: 3 replicates a grayscale image (0: the dataset's own)");
  }
};

struct DataBundle {
  std::shared_ptr<const Dataset> train;  // after the validation split and --limit
  std::shared_ptr<const Dataset> val;    // nullptr when val_size == 0
  std::shared_ptr<const Dataset> test;
  Transform train_transform;
  Transform eval_transform;
  std::vector<int64_t> input_shape;  // C, H, W
  int64_t num_classes = 0;
};

// The names make_data accepts.
const std::vector<std::string>& dataset_names();

// Opens the dataset named in `options`; `seed` fixes the validation split and
// the --limit subset.
DataBundle make_data(const DataOptions& options, uint64_t seed);

// Only the test split (for evaluation without touching the training files).
DataBundle make_test_data(const DataOptions& options, uint64_t seed);

}  // namespace limpq::data
