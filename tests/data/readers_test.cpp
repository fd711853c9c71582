#include "limpq/data/readers.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "limpq/data/datasets.h"
#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq::data {
namespace {

using ::testing::HasSubstr;

class ReadersTest : public limpq::testing::SeededTest {};

using limpq::testing::error_of;

TEST_F(ReadersTest, IdxRoundTripPlainAndGzip) {
  std::vector<uint8_t> data(2 * 3 * 4);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7);
  for (bool gzip : {false, true}) {
    const std::string path = temp_path(gzip ? "x.gz" : "x");
    limpq::testing::write_idx(path, {2, 3, 4}, data, gzip);
    IdxArray arr = read_idx(path);
    EXPECT_EQ(arr.dims, (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(arr.data, data);
  }
}

TEST_F(ReadersTest, IdxWrongMagicIsNamed) {
  const std::string path = temp_path("bad");
  limpq::testing::write_bytes(path, std::string("\x01\x02\x08\x01\x00\x00\x00\x01\x05", 9));
  EXPECT_THAT(error_of([&] { read_idx(path); }), HasSubstr("wrong IDX magic number"));
  EXPECT_THAT(error_of([&] { read_idx(path); }), HasSubstr(path));
}

TEST_F(ReadersTest, IdxUnsupportedTypeAndShortHeader) {
  const std::string path = temp_path("f32");
  limpq::testing::write_bytes(path, std::string("\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", 12));
  EXPECT_THAT(error_of([&] { read_idx(path); }), HasSubstr("element type 0xd"));
  limpq::testing::write_bytes(path, std::string("\x00\x00", 2));
  EXPECT_THAT(error_of([&] { read_idx(path); }), HasSubstr("shorter than the 4-byte header"));
}

// Found by fuzz_idx: four large dimensions used to overflow the element
// count (signed overflow) before the size check.
TEST_F(ReadersTest, IdxHugeDimensionsAreRefusedWithoutOverflow) {
  const std::string path = temp_path("huge");
  limpq::testing::write_bytes(path, std::string("\x00\x00\x08\x04\xff\xff\xff\xff\xff\xff\xff\xff"
                                                "\xff\xff\xff\xff\xff\xff\xff\xff", 20));
  EXPECT_THAT(error_of([&] { read_idx(path); }), HasSubstr("implausibly large"));
}

TEST_F(ReadersTest, IdxTruncatedAndTrailingData) {
  const std::string path = temp_path("t");
  limpq::testing::write_idx(path, {10}, std::vector<uint8_t>(10, 1));
  std::string bytes = util::read_file(path);
  limpq::testing::write_bytes(path, bytes.substr(0, bytes.size() - 3));
  EXPECT_THAT(error_of([&] { read_idx(path); }), HasSubstr("truncated file"));
  limpq::testing::write_bytes(path, bytes + "zz");
  EXPECT_THAT(error_of([&] { read_idx(path); }), HasSubstr("trailing bytes"));
}

TEST_F(ReadersTest, TruncatedGzipIsDetected) {
  const std::string path = temp_path("t.gz");
  limpq::testing::write_idx(path, {4000}, std::vector<uint8_t>(4000, 3), /*gzip=*/true);
  std::string bytes = util::read_file(path);
  limpq::testing::write_bytes(path, bytes.substr(0, bytes.size() / 2));
  EXPECT_THAT(error_of([&] { read_maybe_gzip(path); }), HasSubstr("gzip"));
}

TEST_F(ReadersTest, ImageAndLabelCountsMustAgree) {
  const std::string dir = temp_dir();
  limpq::testing::write_idx(dir + "/img", {3, 2, 2}, std::vector<uint8_t>(12, 0));
  limpq::testing::write_idx(dir + "/lab", {4}, std::vector<uint8_t>(4, 0));
  EXPECT_THAT(error_of([&] { load_idx_dataset(dir + "/img", dir + "/lab", 10); }),
              HasSubstr("holds 3 images but"));
  limpq::testing::write_idx(dir + "/lab", {3}, {0, 1, 12});
  EXPECT_THAT(error_of([&] { load_idx_dataset(dir + "/img", dir + "/lab", 10); }),
              HasSubstr("label 12 of example 2"));
}

TEST_F(ReadersTest, MnistFolderFindsPlainOrGzFilesAndNamesMissingOnes) {
  const std::string dir = limpq::testing::write_synthetic_mnist(temp_path("m"), 20, 10);
  auto train = load_mnist_format(dir, Split::kTrain);
  EXPECT_EQ(train->size(), 20);
  EXPECT_EQ(train->label(13), 3);
  Image img = train->image(0);
  EXPECT_EQ(img.height, 28);
  EXPECT_EQ(img.channels, 1);
  std::filesystem::remove(dir + "/t10k-labels-idx1-ubyte.gz");
  EXPECT_THAT(error_of([&] { load_mnist_format(dir, Split::kTest); }), HasSubstr("t10k-labels-idx1-ubyte"));
}

TEST_F(ReadersTest, CifarRecordsAreDecodedToHwc) {
  // Two CIFAR-10 records: label, then R, G, B planes of 32x32.
  std::string bytes;
  for (int r = 0; r < 2; ++r) {
    bytes.push_back(static_cast<char>(r == 0 ? 3 : 9));
    for (int c = 0; c < 3; ++c) bytes.append(1024, static_cast<char>(10 * (c + 1) + r));
  }
  const std::string path = temp_path("data_batch_1.bin");
  limpq::testing::write_bytes(path, bytes);
  auto ds = parse_cifar({path}, 1, 10);
  ASSERT_EQ(ds->size(), 2);
  EXPECT_EQ(ds->label(0), 3);
  EXPECT_EQ(ds->label(1), 9);
  Image img = ds->image(1);
  EXPECT_EQ(img.channels, 3);
  EXPECT_EQ(img.at(5, 7, 0), 11);
  EXPECT_EQ(img.at(5, 7, 1), 21);
  EXPECT_EQ(img.at(5, 7, 2), 31);
  // CIFAR-100: coarse then fine label; the fine one is used.
  std::string rec100 = std::string("\x02\x41", 2) + std::string(3072, '\x01');
  limpq::testing::write_bytes(path, rec100);
  EXPECT_EQ(parse_cifar({path}, 2, 100)->label(0), 0x41);
}

TEST_F(ReadersTest, CifarTruncatedAndBadLabel) {
  const std::string path = temp_path("b.bin");
  limpq::testing::write_bytes(path, std::string(3073 + 100, '\0'));
  EXPECT_THAT(error_of([&] { parse_cifar({path}, 1, 10); }), HasSubstr("not a whole number of 3073-byte"));
  limpq::testing::write_bytes(path, std::string(1, '\x0c') + std::string(3072, '\0'));
  EXPECT_THAT(error_of([&] { parse_cifar({path}, 1, 10); }), HasSubstr("has label 12"));
}

TEST_F(ReadersTest, ImageFolderDecodesJpegsWithSortedClasses) {
  const std::string root = temp_path("folder");
  std::vector<uint8_t> rgb(16 * 12 * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i % 3 == 0 ? 200 : 40);
  for (const std::string cls : {"zebra", "ant"}) {
    std::filesystem::create_directories(root + "/" + cls);
    limpq::testing::write_bytes(root + "/" + cls + "/a.JPG", limpq::testing::encode_jpeg(rgb, 16, 12));
    limpq::testing::write_bytes(root + "/" + cls + "/notes.txt", "ignored");
  }
  ImageFolderDataset ds(root);
  ASSERT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.classes(), (std::vector<std::string>{"ant", "zebra"}));
  EXPECT_EQ(ds.label(1), 1);
  Image img = ds.image(0);
  EXPECT_EQ(img.width, 16);
  EXPECT_EQ(img.height, 12);
  EXPECT_NEAR(img.at(3, 3, 0), 200, 6);
  EXPECT_NEAR(img.at(3, 3, 1), 40, 6);
}

TEST_F(ReadersTest, ImageFolderErrorsNameTheFolderOrFile) {
  const std::string root = temp_path("folder");
  std::filesystem::create_directories(root + "/cat");
  std::filesystem::create_directories(root + "/dog");
  limpq::testing::write_bytes(root + "/cat/1.jpg", "this is not a jpeg");
  EXPECT_THAT(error_of([&] { ImageFolderDataset ds(root); }), HasSubstr("dog' holds no .jpg/.jpeg images"));
  limpq::testing::write_bytes(root + "/dog/1.jpg", "neither is this");
  ImageFolderDataset ds(root);
  EXPECT_THAT(error_of([&] { ds.image(0); }), HasSubstr("cat/1.jpg': not a decodable JPEG"));
  // A JPEG cut in half is refused, not half-decoded.
  std::vector<uint8_t> rgb(64 * 64 * 3, 128);
  const std::string full = limpq::testing::encode_jpeg(rgb, 64, 64);
  limpq::testing::write_bytes(root + "/cat/1.jpg", full.substr(0, full.size() / 2));
  EXPECT_THAT(error_of([&] { ds.image(0); }), HasSubstr("cat/1.jpg"));
  EXPECT_THAT(error_of([&] { ImageFolderDataset missing(root + "/nope"); }), HasSubstr("does not exist"));
}

TEST_F(ReadersTest, RealFashionMnistTestSplit) {
  const std::string dir = limpq::testing::fashion_mnist_dir();
  if (dir.empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto test = load_mnist_format(dir, Split::kTest);
  ASSERT_EQ(test->size(), 10000);
  std::vector<int64_t> counts(10, 0);
  for (int64_t i = 0; i < test->size(); ++i) ++counts[test->label(i)];
  for (int64_t c : counts) EXPECT_EQ(c, 1000);
}

TEST_F(ReadersTest, DatasetRegistryRejectsUnknownNamesAndMissingRoots) {
  EXPECT_THAT(error_of([&] { make_data(DataOptions().dataset("imagenet21k"), 0); }),
              HasSubstr("unknown dataset 'imagenet21k'"));
  EXPECT_THAT(error_of([&] { make_data(DataOptions().dataset("cifar10"), 0); }), HasSubstr("set data.root"));
}

TEST_F(ReadersTest, ValidationSplitAndLimitAreDisjointAndSeeded) {
  const std::string dir = limpq::testing::write_synthetic_mnist(temp_path("m"), 100, 10);
  auto a = make_data(DataOptions().dataset("mnist").root(dir).val_size(20).limit(50), 7);
  auto b = make_data(DataOptions().dataset("mnist").root(dir).val_size(20).limit(50), 7);
  EXPECT_EQ(a.train->size(), 50);
  EXPECT_EQ(a.val->size(), 20);
  EXPECT_EQ(a.input_shape, (std::vector<int64_t>{1, 28, 28}));
  for (int64_t i = 0; i < a.train->size(); ++i) {
    EXPECT_EQ(a.train->image(i).pixels, b.train->image(i).pixels);
  }
  // No validation image appears in the training subset.
  std::set<std::vector<uint8_t>> val_images;
  for (int64_t i = 0; i < a.val->size(); ++i) val_images.insert(a.val->image(i).pixels);
  for (int64_t i = 0; i < a.train->size(); ++i) EXPECT_EQ(val_images.count(a.train->image(i).pixels), 0u);
}

}  // namespace
}  // namespace limpq::data
