#include "limpq/data/loader.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

#include "limpq/util/runtime.h"

namespace limpq::data {
namespace {
uint64_t mix(uint64_t x) { return util::mix_seed(x); }
}  // namespace

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, Transform transform, LoaderOptions options)
    : dataset_(std::move(dataset)), transform_(std::move(transform)), options_(options) {
  TORCH_CHECK(dataset_ != nullptr && dataset_->size() > 0, "data loader: the dataset is empty");
  TORCH_CHECK(options_.batch_size() > 0, "data loader: batch_size must be positive, got ",
              options_.batch_size());
  TORCH_CHECK(options_.workers() >= 0, "data loader: workers must be >= 0, got ", options_.workers());
  TORCH_CHECK(options_.world_size() >= 1 && options_.rank() >= 0 && options_.rank() < options_.world_size(),
              "data loader: rank ", options_.rank(), " is not in [0, world_size=", options_.world_size(), ")");
  // The output shape is that of the first transformed sample; every batch is
  // checked against it.
  Rng rng(0);
  const Image probe = transform_.apply_steps(dataset_->image(0), rng);
  channels_ = probe.channels;
  height_ = probe.height;
  width_ = probe.width;
  TORCH_CHECK(static_cast<int64_t>(transform_.mean().size()) == channels_, "data loader: ",
              dataset_->description(), " has ", channels_, "-channel images but the normalisation has ",
              transform_.mean().size(), " channels");
  start_epoch(0);
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::examples_per_epoch() const { return static_cast<int64_t>(order_.size()); }

int64_t DataLoader::batches_per_epoch() const { return num_batches_; }

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  produced_.notify_all();
  consumed_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  stopping_ = false;
}

void DataLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  stop_workers();
  epoch_ = epoch;
  const int64_t n = dataset_->size();
  std::vector<int64_t> all;
  if (options_.shuffle()) {
    all = seeded_permutation(n, mix(options_.seed() ^ mix(static_cast<uint64_t>(epoch))));
  } else {
    all.resize(n);
    for (int64_t i = 0; i < n; ++i) all[i] = i;
  }
  const int64_t world = options_.world_size();
  int64_t usable = n;
  if (options_.drop_last() && world > 1) usable = (n / world) * world;
  order_.clear();
  for (int64_t i = options_.rank(); i < usable; i += world) order_.push_back(all[i]);

  const int64_t bs = options_.batch_size();
  const int64_t examples = static_cast<int64_t>(order_.size());
  num_batches_ = options_.drop_last() ? examples / bs : (examples + bs - 1) / bs;
  TORCH_CHECK(first_batch >= 0 && first_batch <= num_batches_, "data loader: cannot resume at batch ",
              first_batch, " of an epoch with ", num_batches_, " batches");
  next_to_consume_ = first_batch;
  next_to_produce_ = first_batch;
  ready_.clear();
  error_ = nullptr;
  for (int64_t w = 0; w < options_.workers(); ++w) workers_.emplace_back([this] { worker_loop(); });
}

Batch DataLoader::make_batch(int64_t batch_index) const {
  const int64_t bs = options_.batch_size();
  const int64_t begin = batch_index * bs;
  const int64_t end = std::min<int64_t>(begin + bs, static_cast<int64_t>(order_.size()));
  const int64_t count = end - begin;
  auto float_options = torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(options_.pin_memory());
  Batch batch{torch::empty({count, channels_, height_, width_}, float_options),
              torch::empty({count}, torch::TensorOptions().dtype(torch::kInt64).pinned_memory(options_.pin_memory()))};
  float* images = batch.images.data_ptr<float>();
  int64_t* labels = batch.labels.data_ptr<int64_t>();
  const int64_t sample_floats = channels_ * height_ * width_;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t index = order_[begin + i];
    Rng rng(mix(options_.seed() ^ mix(static_cast<uint64_t>(epoch_) ^ mix(static_cast<uint64_t>(index)))));
    const Image img = transform_.apply_steps(dataset_->image(index), rng);
    TORCH_CHECK(img.channels == channels_ && img.height == height_ && img.width == width_,
                dataset_->description(), ": example ", index, " transforms to ", img.channels, "x",
                img.height, "x", img.width, " but the batch expects ", channels_, "x", height_, "x",
                width_, " (use a transform with a fixed output size)");
    to_normalized_chw(img, transform_.mean(), transform_.std(), images + i * sample_floats);
    labels[i] = dataset_->label(index);
  }
  return batch;
}

void DataLoader::worker_loop() {
  while (true) {
    int64_t index;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      consumed_.wait(lock, [&] {
        return stopping_ || error_ || next_to_produce_ >= num_batches_ ||
               next_to_produce_ < next_to_consume_ + options_.prefetch();
      });
      if (stopping_ || error_ || next_to_produce_ >= num_batches_) return;
      index = next_to_produce_++;
    }
    try {
      Batch batch = make_batch(index);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(index, std::move(batch));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
    }
    produced_.notify_all();
  }
}

std::optional<Batch> DataLoader::next() {
  if (next_to_consume_ >= num_batches_) return std::nullopt;
  if (workers_.empty()) return make_batch(next_to_consume_++);
  std::unique_lock<std::mutex> lock(mutex_);
  produced_.wait(lock, [&] { return error_ || ready_.count(next_to_consume_) > 0; });
  if (error_) std::rethrow_exception(error_);
  auto node = ready_.extract(next_to_consume_);
  ++next_to_consume_;
  lock.unlock();
  consumed_.notify_all();
  return std::move(node.mapped());
}

}  // namespace limpq::data
