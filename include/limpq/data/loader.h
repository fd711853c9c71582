// A batching data loader with worker threads.
//
// Worker threads decode, transform and collate batches ahead of the consumer
// (up to `prefetch` batches in flight), so loading overlaps with compute.
// Batches come out in order and are bit-identical whatever the number of
// workers: the epoch's order is a seeded permutation, and each sample's
// augmentation draws from a generator seeded by (seed, epoch, sample index).
// With world_size > 1 each rank sees the strided shard rank, rank + world, ...
// of the same permutation, which is what data-parallel training needs.
//
//   DataLoader loader(train_set, Transform::padded_crop_flip(28, 2, true, {0.286f}, {0.353f}),
//                     LoaderOptions().batch_size(128).shuffle(true).seed(0));
//   loader.start_epoch(epoch);
//   while (auto batch = loader.next()) { ... batch->images, batch->labels ... }
#pragma once

#include <torch/arg.h>
#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "limpq/data/dataset.h"

namespace limpq::data {

struct Batch {
  torch::Tensor images;  // float32, N x C x H x W
  torch::Tensor labels;  // int64, N
};

struct LoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 128;
  TORCH_ARG(bool, shuffle) = false;
  // Drop the last incomplete batch (and, with several ranks, the examples that
  // would make the shards unequal).
  TORCH_ARG(bool, drop_last) = false;
  // Worker threads; 0 loads on the calling thread.
  TORCH_ARG(int64_t, workers) = 2;
  TORCH_ARG(int64_t, prefetch) = 4;
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  // Page-locked host memory for faster host-to-GPU copies (CUDA builds only).
  TORCH_ARG(bool, pin_memory) = false;
};

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, Transform transform, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Batches this rank gets per epoch.
  int64_t batches_per_epoch() const;
  // Examples this rank gets per epoch.
  int64_t examples_per_epoch() const;
  const Dataset& dataset() const { return *dataset_; }
  const LoaderOptions& options() const { return options_; }

  // Starts (or restarts) an epoch at batch `first_batch` (for resuming).
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The next batch of the epoch, or nullopt at its end.
  std::optional<Batch> next();

  // Builds batch `batch_index` of the current epoch on the calling thread.
  Batch make_batch(int64_t batch_index) const;

 private:
  void stop_workers();
  void worker_loop();

  std::shared_ptr<const Dataset> dataset_;
  Transform transform_;
  LoaderOptions options_;
  int64_t channels_ = 0, height_ = 0, width_ = 0;

  // Epoch state, written only while no worker runs.
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;  // this rank's sample indices, in order
  int64_t num_batches_ = 0;
  int64_t next_to_consume_ = 0;

  // Shared with the workers.
  std::mutex mutex_;
  std::condition_variable produced_, consumed_;
  int64_t next_to_produce_ = 0;
  std::map<int64_t, Batch> ready_;
  std::exception_ptr error_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace limpq::data
