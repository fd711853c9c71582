#include "limpq/data/datasets.h"

#include <c10/util/Exception.h>

#include <filesystem>

#include "limpq/data/readers.h"

namespace limpq::data {
namespace {

// The crop of image-folder datasets when data.image_size is 0.
constexpr int64_t kFolderImageSize = 224;

struct DatasetSpec {
  std::string name;
  std::string default_root;
  std::vector<float> mean, std;
  int64_t crop_padding;
  bool flip;
};

const std::vector<DatasetSpec>& specs() {
  static const std::vector<DatasetSpec> kSpecs = {
      {"fashion-mnist", "/usr/share/datasets/fashion-mnist", {0.2860f}, {0.3530f}, 2, true},
      {"mnist", "", {0.1307f}, {0.3081f}, 2, false},
      {"cifar10", "", {0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}, 4, true},
      {"cifar100", "", {0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}, 4, true},
      {"image-folder", "", {0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}, 0, true},
  };
  return kSpecs;
}

const DatasetSpec& find_spec(const std::string& name) {
  for (const auto& s : specs()) {
    if (s.name == name) return s;
  }
  std::string known;
  for (const auto& s : specs()) known += (known.empty() ? "" : ", ") + s.name;
  TORCH_CHECK(false, "data: unknown dataset '", name, "' (known: ", known, ")");
}

std::string resolve_root(const DataOptions& options, const DatasetSpec& spec) {
  std::string root = options.root().empty() ? spec.default_root : options.root();
  TORCH_CHECK(!root.empty(), "data: dataset '", spec.name, "' has no default location; set data.root (--root)");
  if (spec.name == "fashion-mnist" && options.root().empty()) {
    TORCH_CHECK(std::filesystem::is_directory(root), "data: '", root,
                "' does not exist; install it with `apt-get install dataset-fashion-mnist` or set --root");
  }
  return root;
}

std::shared_ptr<const Dataset> open_split(const DatasetSpec& spec, const std::string& root, Split split) {
  if (spec.name == "fashion-mnist" || spec.name == "mnist") return load_mnist_format(root, split);
  if (spec.name == "cifar10") return load_cifar10(root, split);
  if (spec.name == "cifar100") return load_cifar100(root, split);
  const std::string sub = (std::filesystem::path(root) / (split == Split::kTrain ? "train" : "val")).string();
  return std::make_shared<ImageFolderDataset>(sub);
}

DataBundle bundle_for(const DataOptions& options, const DatasetSpec& spec,
                      std::shared_ptr<const Dataset> test) {
  const bool folder = spec.name == "image-folder";
  Transform train_t = Transform::normalize_only(spec.mean, spec.std);
  Transform eval_t = Transform::normalize_only(spec.mean, spec.std);
  if (folder) {
    const int64_t size = options.image_size() > 0 ? options.image_size() : kFolderImageSize;
    TORCH_CHECK(options.resize_size() >= size, "data: resize_size must be >= image_size, got ",
                options.resize_size(), " and ", size);
    train_t = options.augment() ? Transform::imagenet_train(size, spec.mean, spec.std)
                                : Transform::imagenet_eval(options.resize_size(), size, spec.mean, spec.std);
    eval_t = Transform::imagenet_eval(options.resize_size(), size, spec.mean, spec.std);
  }
  const Image sample = test->image(0);
  if (!folder && options.augment()) {
    TORCH_CHECK(sample.height == sample.width, "data: ", test->description(), " has non-square images");
    train_t = Transform::padded_crop_flip(sample.height, spec.crop_padding, spec.flip, spec.mean, spec.std);
  }
  // Image folders are cropped to image_size above; the other datasets are
  // resized to it after their augmentation, which crops at their own size.
  const int64_t resize = folder ? 0 : options.image_size();
  train_t = train_t.adapted(options.channels(), resize);
  eval_t = eval_t.adapted(options.channels(), resize);
  int64_t height = sample.height, width = sample.width;
  if (folder || options.image_size() > 0) {
    height = width = options.image_size() > 0 ? options.image_size() : kFolderImageSize;
  }
  const int64_t channels = options.channels() > 0 ? options.channels() : (folder ? 3 : sample.channels);
  DataBundle bundle{nullptr, nullptr, std::move(test), std::move(train_t), std::move(eval_t), {}, 0};
  bundle.num_classes = bundle.test->num_classes();
  bundle.input_shape = {channels, height, width};
  return bundle;
}

void check_options(const DataOptions& options) {
  TORCH_CHECK(options.image_size() >= 0, "data: image_size must be >= 0 (0: the dataset's own), got ",
              options.image_size());
  TORCH_CHECK(options.channels() >= 0, "data: channels must be >= 0 (0: the dataset's own), got ", options.channels());
  TORCH_CHECK(options.batch_size() > 0, "data: batch_size must be positive, got ", options.batch_size());
  TORCH_CHECK(options.eval_batch_size() > 0, "data: eval_batch_size must be positive, got ",
              options.eval_batch_size());
  TORCH_CHECK(options.workers() >= 0, "data: workers must be >= 0, got ", options.workers());
  TORCH_CHECK(options.val_size() >= 0, "data: val_size must be >= 0, got ", options.val_size());
  TORCH_CHECK(options.limit() >= 0, "data: limit must be >= 0, got ", options.limit());
  TORCH_CHECK(options.test_limit() >= 0, "data: test_limit must be >= 0, got ", options.test_limit());
}

}  // namespace

const std::vector<std::string>& dataset_names() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> names;
    for (const auto& s : specs()) names.push_back(s.name);
    return names;
  }();
  return kNames;
}

DataBundle make_test_data(const DataOptions& options, uint64_t seed) {
  check_options(options);
  const DatasetSpec& spec = find_spec(options.dataset());
  const std::string root = resolve_root(options, spec);
  auto test = take_subset(open_split(spec, root, Split::kTest), options.test_limit(), seed + 2);
  return bundle_for(options, spec, std::move(test));
}

DataBundle make_data(const DataOptions& options, uint64_t seed) {
  DataBundle bundle = make_test_data(options, seed);
  const DatasetSpec& spec = find_spec(options.dataset());
  auto train = open_split(spec, resolve_root(options, spec), Split::kTrain);
  TORCH_CHECK(train->num_classes() == bundle.num_classes, "data: the training split has ",
              train->num_classes(), " classes but the test split has ", bundle.num_classes);
  auto [rest, val] = split_holdout(train, options.val_size(), seed);
  bundle.train = take_subset(rest, options.limit(), seed + 1);
  bundle.val = val;
  return bundle;
}

}  // namespace limpq::data
