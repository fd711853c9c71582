#include "limpq/models/state_dict.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstdlib>

#include "limpq/models/model.h"
#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq::models {
namespace {

using ::testing::HasSubstr;

class StateDictTest : public limpq::testing::SeededTest {};

void save_dict(const std::string& path, const StateDict& sd) {
  const auto bytes = torch::pickle_save(state_dict_to_ivalue(sd));
  util::write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

TEST_F(StateDictTest, RoundTripThroughAFile) {
  auto a = make_model("resnet20", 1, 10);
  auto b = make_model("resnet20", 1, 10);
  save_dict(temp_path("w.pt"), state_dict(*a));
  load_state_dict(*b, read_state_dict_file(temp_path("w.pt")), "w.pt");
  for (const auto& [name, t] : state_dict(*a)) EXPECT_TRUE(torch::equal(t, state_dict(*b).at(name))) << name;
}

TEST_F(StateDictTest, EveryMismatchIsListed) {
  auto model = make_model("resnet20", 1, 10);
  StateDict sd = state_dict(*model);
  sd.erase("fc.bias");
  sd.erase("layer1.0.bn1.running_mean");
  sd["extra.weight"] = torch::zeros({1});
  sd["conv1.weight"] = torch::zeros({16, 3, 3, 3});
  try {
    load_state_dict(*model, sd, "weights.pt");
    FAIL();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    EXPECT_THAT(msg, HasSubstr("'weights.pt' does not match"));
    EXPECT_THAT(msg, HasSubstr("missing from the file (2)"));
    EXPECT_THAT(msg, HasSubstr("fc.bias"));
    EXPECT_THAT(msg, HasSubstr("layer1.0.bn1.running_mean"));
    EXPECT_THAT(msg, HasSubstr("extra.weight"));
    EXPECT_THAT(msg, HasSubstr("conv1.weight (file [16, 3, 3, 3], model [16, 1, 3, 3])"));
  }
}

// A file of another network lists a few names of each kind, not hundreds.
TEST_F(StateDictTest, LongMismatchListsAreCut) {
  auto model = make_model("resnet20", 1, 10);
  const std::string msg =
      limpq::testing::error_of([&] { load_state_dict(*model, state_dict(*make_model("resnet56", 1, 10)), "r56.pt"); });
  EXPECT_THAT(msg, HasSubstr("in the file but not in the model ("));
  EXPECT_THAT(msg, HasSubstr("more"));
  EXPECT_LT(std::count(msg.begin(), msg.end(), '\n'), 12) << msg;
}

TEST_F(StateDictTest, GarbageFileIsRefusedWithItsName) {
  limpq::testing::write_bytes(temp_path("junk.pt"), "definitely not a pickle");
  try {
    read_state_dict_file(temp_path("junk.pt"));
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("junk.pt': not a readable PyTorch file"));
  }
}

// The weights path usually comes from a config; the message says where.
TEST_F(StateDictTest, MissingWeightsNameWhereThePathComesFrom) {
  const std::string message =
      limpq::testing::error_of([&] { read_weights_for(temp_path("runs/fp/checkpoint.pt"), WeightsTarget{"resnet20", "", ""}); });
  EXPECT_THAT(message, HasSubstr("runs/fp/checkpoint.pt' do not exist"));
  EXPECT_THAT(message, HasSubstr("model.weights in the config, or --weights"));
}

}  // namespace
}  // namespace limpq::models
