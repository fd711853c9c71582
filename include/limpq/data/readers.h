// Readers for the on-disk formats of the standard datasets.
//
//   MNIST / Fashion-MNIST: IDX files, plain or gzip-compressed
//     (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...).
//   CIFAR-10 / CIFAR-100: the "binary version" batches
//     (data_batch_{1..5}.bin + test_batch.bin; train.bin + test.bin).
//   Image folders: root/<class>/<image>.jpg, one sub-folder per class, sorted
//     class names give the labels (torchvision's ImageFolder).
//
// A malformed file is refused with an error naming the file and the problem.
//
//   auto train = limpq::data::load_mnist_format("/usr/share/datasets/fashion-mnist", Split::kTrain);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "limpq/data/dataset.h"

namespace limpq::data {

// An IDX array of unsigned bytes.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};

// Parses IDX bytes (already decompressed); `name` is used in error messages.
IdxArray parse_idx(const std::string& bytes, const std::string& name);

// Reads a whole file, gunzipping it when it is gzip-compressed.
std::string read_maybe_gzip(const std::string& path);

IdxArray read_idx(const std::string& path);

// Pairs an IDX image file (N x H x W) with an IDX label file (N).
std::shared_ptr<const Dataset> load_idx_dataset(const std::string& images_path,
                                                const std::string& labels_path,
                                                int64_t num_classes);

// MNIST-format folder: looks for the standard file names, with or without .gz.
std::shared_ptr<const Dataset> load_mnist_format(const std::string& root, Split split);

// Parses CIFAR binary records; `label_bytes` is 1 for CIFAR-10, 2 for
// CIFAR-100 (coarse then fine label; the fine label is used).
std::shared_ptr<const Dataset> parse_cifar(const std::vector<std::string>& paths,
                                           int64_t label_bytes, int64_t num_classes);

std::shared_ptr<const Dataset> load_cifar10(const std::string& root, Split split);
std::shared_ptr<const Dataset> load_cifar100(const std::string& root, Split split);

// Decodes a JPEG held in memory to RGB; `name` is used in error messages.
Image decode_jpeg(const std::string& bytes, const std::string& name);

// root/<class>/<file>.jpg; images are decoded on demand.
class ImageFolderDataset : public Dataset {
 public:
  explicit ImageFolderDataset(const std::string& root);
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  Image image(int64_t index) const override;
  int64_t label(int64_t index) const override { return labels_.at(index); }
  int64_t num_classes() const override { return static_cast<int64_t>(classes_.size()); }
  std::string description() const override { return "image folder '" + root_ + "'"; }
  const std::vector<std::string>& classes() const { return classes_; }

 private:
  std::string root_;
  std::vector<std::string> classes_;
  std::vector<std::string> files_;
  std::vector<int64_t> labels_;
};

}  // namespace limpq::data
