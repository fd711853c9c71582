#include "limpq/data/loader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "support/test_support.h"

namespace limpq::data {
namespace {

class LoaderTest : public limpq::testing::SeededTest {
 protected:
  // 37 4x4 grey images; image i has every pixel = i, label i % 5.
  std::shared_ptr<const Dataset> numbered(int64_t n = 37) {
    std::vector<uint8_t> pixels(n * 16);
    std::vector<int64_t> labels(n);
    for (int64_t i = 0; i < n; ++i) {
      std::fill_n(pixels.begin() + i * 16, 16, static_cast<uint8_t>(i));
      labels[i] = i % 5;
    }
    return std::make_shared<InMemoryDataset>(pixels, labels, 4, 4, 1, 5, "numbered");
  }
  static Transform identity() { return Transform::normalize_only({0.0f}, {1.0f / 255.0f}); }

  // Sample ids (pixel values) of every batch of an epoch.
  static std::vector<std::vector<int64_t>> epoch_ids(DataLoader& loader, int64_t epoch) {
    std::vector<std::vector<int64_t>> out;
    loader.start_epoch(epoch);
    while (auto b = loader.next()) {
      std::vector<int64_t> ids;
      for (int64_t i = 0; i < b->images.size(0); ++i) ids.push_back(std::lround(b->images[i][0][0][0].item<float>()));
      EXPECT_EQ(b->labels.size(0), b->images.size(0));
      for (int64_t i = 0; i < b->labels.size(0); ++i) EXPECT_EQ(b->labels[i].item<int64_t>(), ids[i] % 5);
      out.push_back(ids);
    }
    return out;
  }
};

TEST_F(LoaderTest, EveryExampleOnceInOrderWithoutShuffle) {
  DataLoader loader(numbered(), identity(), LoaderOptions().batch_size(8).workers(3));
  EXPECT_EQ(loader.batches_per_epoch(), 5);
  auto batches = epoch_ids(loader, 0);
  ASSERT_EQ(batches.size(), 5u);
  EXPECT_EQ(batches.back().size(), 5u);
  int64_t expect = 0;
  for (const auto& b : batches)
    for (int64_t id : b) EXPECT_EQ(id, expect++);
}

TEST_F(LoaderTest, ShuffleIsSeededPerEpochAndIndependentOfWorkers) {
  auto ds = numbered();
  auto opts = LoaderOptions().batch_size(8).shuffle(true).seed(11).drop_last(true);
  DataLoader a(ds, identity(), opts.workers(0));
  DataLoader b(ds, identity(), opts.workers(4).prefetch(2));
  const auto a0 = epoch_ids(a, 0);
  EXPECT_EQ(a0, epoch_ids(b, 0));
  EXPECT_EQ(a0.size(), 4u) << "drop_last drops the partial batch";
  EXPECT_NE(a0, epoch_ids(a, 1)) << "epochs are shuffled differently";
  EXPECT_EQ(epoch_ids(a, 1), epoch_ids(b, 1));
  std::set<int64_t> seen;
  for (const auto& batch : a0) seen.insert(batch.begin(), batch.end());
  EXPECT_EQ(seen.size(), 32u);
}

TEST_F(LoaderTest, RanksShardTheSamePermutation) {
  auto ds = numbered(40);
  auto opts = LoaderOptions().batch_size(4).shuffle(true).seed(5).drop_last(true).world_size(2);
  DataLoader r0(ds, identity(), opts.rank(0));
  DataLoader r1(ds, identity(), opts.rank(1));
  DataLoader whole(ds, identity(), LoaderOptions().batch_size(8).shuffle(true).seed(5).drop_last(true));
  const auto b0 = epoch_ids(r0, 2), b1 = epoch_ids(r1, 2), bw = epoch_ids(whole, 2);
  ASSERT_EQ(b0.size(), bw.size());
  for (size_t i = 0; i < bw.size(); ++i) {
    std::multiset<int64_t> joint(b0[i].begin(), b0[i].end());
    joint.insert(b1[i].begin(), b1[i].end());
    EXPECT_EQ(joint, std::multiset<int64_t>(bw[i].begin(), bw[i].end())) << "global batch " << i;
  }
}

TEST_F(LoaderTest, ResumingMidEpochGivesTheRemainingBatches) {
  auto ds = numbered();
  auto opts = LoaderOptions().batch_size(4).shuffle(true).seed(3).workers(2);
  DataLoader loader(ds, Transform::padded_crop_flip(4, 1, true, {0.0f}, {1.0f}), opts);
  loader.start_epoch(4);
  std::vector<torch::Tensor> full;
  while (auto b = loader.next()) full.push_back(b->images);
  loader.start_epoch(4, 3);
  for (size_t i = 3; i < full.size(); ++i) {
    auto b = loader.next();
    ASSERT_TRUE(b.has_value());
    EXPECT_TRUE(torch::equal(b->images, full[i])) << "batch " << i << " (augmentation included)";
  }
  EXPECT_FALSE(loader.next().has_value());
}

TEST_F(LoaderTest, AWorkerErrorReachesTheConsumer) {
  class Broken : public Dataset {
   public:
    int64_t size() const override { return 10; }
    Image image(int64_t index) const override {
      TORCH_CHECK(index != 6, "broken.bin: example 6 is corrupt");
      return Image(2, 2, 1);
    }
    int64_t label(int64_t) const override { return 0; }
    int64_t num_classes() const override { return 1; }
    std::string description() const override { return "broken"; }
  };
  DataLoader loader(std::make_shared<Broken>(), identity(), LoaderOptions().batch_size(2).workers(2));
  try {
    while (loader.next()) {
    }
    FAIL() << "expected the worker's error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), ::testing::HasSubstr("example 6 is corrupt"));
  }
}

}  // namespace
}  // namespace limpq::data
