#include "limpq/quant/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/test_support.h"

namespace limpq::quant {
namespace {

using ::testing::HasSubstr;

class PolicyTest : public limpq::testing::SeededTest {
 protected:
  std::string check_error(const Policy& p) {
    try {
      check_policy(p, {"a", "b"}, {"first", "last"}, "p.json");
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    }
    return "";
  }
  Policy valid() const {
    Policy p;
    p.model = "toy";
    p.layers = {{"a", {4, 3}}, {"b", {2, 8}}};
    p.fixed = {{"first", {8, 8}}, {"last", {8, 8}}};
    return p;
  }
};

TEST_F(PolicyTest, RoundTripKeepsOrderAndBits) {
  write_policy(temp_path("p.json"), valid());
  const Policy back = read_policy(temp_path("p.json"));
  ASSERT_EQ(back.layers.size(), 2u);
  EXPECT_EQ(back.layers[0].first, "a");
  EXPECT_EQ(back.layers[1].second, (LayerBits{2, 8}));
  EXPECT_EQ(*back.find("last"), (LayerBits{8, 8}));
  EXPECT_EQ(back.find("zzz"), nullptr);
  EXPECT_EQ(check_error(back), "");
}

TEST_F(PolicyTest, EveryProblemIsNamed) {
  Policy p = valid();
  p.layers = {{"a", {9, 3}}, {"ghost", {4, 4}}};  // b missing, ghost unknown, 9 bits
  const std::string msg = check_error(p);
  EXPECT_THAT(msg, HasSubstr("policy 'p.json' does not fit the model"));
  EXPECT_THAT(msg, HasSubstr("unknown layer 'ghost'"));
  EXPECT_THAT(msg, HasSubstr("searchable layer 'b' is missing"));
  EXPECT_THAT(msg, HasSubstr("layer 'a': W9A3 is outside 2..8 bits"));
}

TEST_F(PolicyTest, FixedLayersMustBeListedUnderFixed) {
  Policy p = valid();
  p.fixed = {{"first", {8, 8}}};
  p.layers.push_back({"last", {4, 4}});
  const std::string msg = check_error(p);
  EXPECT_THAT(msg, HasSubstr("'last' is listed under 'layers' but the model has it fixed"));
}

TEST_F(PolicyTest, FullPrecisionIsAllowed) {
  Policy p = valid();
  p.layers[0].second = {32, 32};
  EXPECT_EQ(check_error(p), "");
}

TEST_F(PolicyTest, MalformedFilesAreRefusedByName) {
  const std::string path = temp_path("bad.json");
  auto error_for = [&](const std::string& text) {
    limpq::testing::write_bytes(path, text);
    try {
      read_policy(path);
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string();
  };
  EXPECT_THAT(error_for("{not json"), HasSubstr("not valid JSON"));
  EXPECT_THAT(error_for(R"({"layers": {}})"), HasSubstr("missing \"format\""));
  EXPECT_THAT(error_for(R"({"format": "limpq.policy/9", "layers": {}})"), HasSubstr("format 'limpq.policy/9'"));
  EXPECT_THAT(error_for(R"({"format": "limpq.policy/1", "layers": {"a": {"weight_bits": 4}}})"),
              HasSubstr("layers.a: expected {\"weight_bits\": W, \"act_bits\": A}"));
  EXPECT_THAT(error_for(R"({"format": "limpq.policy/1", "layers": {"a": {"weight_bits": "4", "act_bits": 4}}})"),
              HasSubstr("must be integers"));
  EXPECT_THAT(error_for(R"({"format": "limpq.policy/1", "layers": {}})"), ::testing::IsEmpty());
}

TEST_F(PolicyTest, UniformSpecs) {
  EXPECT_EQ(parse_uniform("W4A4"), (LayerBits{4, 4}));
  EXPECT_EQ(parse_uniform("w3a2"), (LayerBits{3, 2}));
  EXPECT_THROW(parse_uniform("W4"), c10::Error);
  EXPECT_THROW(parse_uniform("W4A4x"), c10::Error);
  EXPECT_THROW(parse_uniform("W9A4"), c10::Error);
}

}  // namespace
}  // namespace limpq::quant
