// Built-in datasets by name, with their standard transforms.
//
//   name            root default                           images
//   fashion-mnist   /usr/share/datasets/fashion-mnist      1x28x28, 10 classes
//   mnist           (required)                             1x28x28, 10 classes
//   cifar10         (required)                             3x32x32, 10 classes
//   cifar100        (required)                             3x32x32, 100 classes
//   image-folder    (required; root/train, root/val)       3x224x224 (image_size)
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
  // Image-folder datasets: training crop size and evaluation resize.
  TORCH_ARG(int64_t, image_size) = 224;
  TORCH_ARG(int64_t, resize_size) = 256;

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
    v("image_size", image_size_, "image-folder crop size");
    v("resize_size", resize_size_, "image-folder evaluation resize");
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
