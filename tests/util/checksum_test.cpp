#include "limpq/util/checksum.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <csignal>

#include "limpq/util/json.h"
#include "limpq/util/signals.h"
#include "support/test_support.h"

namespace limpq::util {
namespace {

using ::testing::HasSubstr;

TEST(ChecksumTest, Crc32OfTheStandardCheckString) {
  EXPECT_EQ(Crc32().update("123456789").value(), 0xcbf43926u);
  EXPECT_EQ(Crc32().update("123456789").str(), "crc32:cbf43926");
  EXPECT_EQ(Crc32().update("1234").update("56789").value(), 0xcbf43926u) << "incremental";
}

TEST(ChecksumTest, SealedJsonVerifiesAndDetectsEdits) {
  nlohmann::ordered_json j = {{"format", "x/1"}, {"steps", {{"4", 0.0437}, {"2", 0.1091}}}};
  seal_json(j);
  ASSERT_TRUE(j.contains("checksum"));
  // Round trip through text, as a reader sees it.
  auto read = nlohmann::ordered_json::parse(j.dump(2));
  EXPECT_TRUE(verify_json(read, "file 'a.json'"));
  EXPECT_FALSE(read.contains("checksum")) << "verified and removed";

  auto edited = nlohmann::ordered_json::parse(j.dump(2));
  edited["steps"]["4"] = 0.0438;
  EXPECT_THAT([&] { verify_json(edited, "file 'a.json'"); },
              ::testing::ThrowsMessage<c10::Error>(AllOf(HasSubstr("file 'a.json'"), HasSubstr("checksum mismatch"))));

  nlohmann::ordered_json hand_written = {{"format", "x/1"}};
  EXPECT_FALSE(verify_json(hand_written, "file 'b.json'")) << "a file without a checksum is accepted";
}

TEST(ChecksumTest, IValueChecksumCoversTensorBytesAndIgnoresDictOrder) {
  c10::impl::GenericDict a(c10::StringType::get(), c10::AnyType::get());
  a.insert("w", torch::arange(6, torch::kFloat32).reshape({2, 3}));
  a.insert("name", std::string("resnet20"));
  a.insert("epoch", int64_t{3});
  c10::impl::GenericDict b(c10::StringType::get(), c10::AnyType::get());
  b.insert("epoch", int64_t{3});
  b.insert("name", std::string("resnet20"));
  b.insert("w", torch::arange(6, torch::kFloat32).reshape({2, 3}));
  EXPECT_EQ(ivalue_checksum(a), ivalue_checksum(b));

  b.insert("checksum", std::string("crc32:00000000"));
  EXPECT_EQ(ivalue_checksum(a), ivalue_checksum(b)) << "a dict's own checksum entry is left out";

  c10::impl::GenericDict c = a.copy();
  c.insert_or_assign("w", torch::arange(6, torch::kFloat32).reshape({3, 2}));
  EXPECT_NE(ivalue_checksum(a), ivalue_checksum(c)) << "shape";
  auto flipped = torch::arange(6, torch::kFloat32).reshape({2, 3});
  reinterpret_cast<int32_t*>(flipped.data_ptr<float>())[5] ^= 1;  // one bit of the last element
  c.insert_or_assign("w", flipped);
  EXPECT_NE(ivalue_checksum(a), ivalue_checksum(c)) << "one flipped bit";
}

// Found by fuzz_indicators: "macs": 1.8e86 read as int64 was undefined
// behaviour; integers from files go through json_int.
TEST(JsonTest, IntegersMustBeIntegersInRange) {
  EXPECT_EQ(json_int(nlohmann::json::parse("12"), "x"), 12);
  EXPECT_EQ(json_int(nlohmann::json::parse("-3"), "x"), -3);
  EXPECT_THAT([] { json_int(nlohmann::json::parse("1.80634e+86"), "layer 'a': field 'macs'"); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("layer 'a': field 'macs' must be an integer")));
  EXPECT_THAT([] { json_int(nlohmann::json::parse("18446744073709551615"), "n"); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("too large")));
  EXPECT_THAT([] { json_int_list(nlohmann::json::parse("[1, 2.5]"), "shape"); },
              ::testing::ThrowsMessage<c10::Error>(HasSubstr("shape[1] must be an integer")));
}

TEST(SignalsTest, FirstSignalRequestsAStop) {
  clear_stop();
  {
    StopOnSignal guard;
    EXPECT_FALSE(stop_requested());
    std::raise(SIGTERM);
    EXPECT_TRUE(stop_requested());
    EXPECT_EQ(stop_signal(), SIGTERM);
  }
  clear_stop();
  EXPECT_FALSE(stop_requested());
  EXPECT_EQ(Interrupted("x", SIGINT).exit_status(), 130);
}

TEST(SignalsDeathTest, SecondSignalExitsAtOnce) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(
      {
        clear_stop();
        StopOnSignal guard;
        std::raise(SIGINT);
        std::raise(SIGINT);
        std::_Exit(0);  // not reached
      },
      ::testing::ExitedWithCode(130), "exiting now");
}

}  // namespace
}  // namespace limpq::util
