// The command-line tool as a user meets it, run as a process: what a
// command writes (and does not write) where the README's lines lead.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "limpq/util/atomic_file.h"
#include "limpq/util/subprocess.h"
#include "support/process.h"
#include "support/test_support.h"

namespace limpq {
namespace {

using ::testing::HasSubstr;

std::string cli() { return limpq::testing::limpq_cli(LIMPQ_CLI_DEFAULT); }

const std::string kIndicators = std::string(LIMPQ_SEARCH_TESTDATA) + "/resnet20_fashion_mnist_indicators.json";

class CliTest : public limpq::testing::SeededTest {
 protected:
  // Runs limpq with `args` in the test's folder.
  util::ProcessResult limpq_in_temp_dir(const std::string& args) {
    return util::run_process({"sh", "-c", "cd '" + temp_dir() + "' && '" + cli() + "' " + args + " 2>&1"});
  }
};

// A search without --out prints the policy and writes nothing: the
// policy.json a previous line wrote is what `finetune --policy` reads next.
TEST_F(CliTest, SearchWithoutOutLeavesAnExistingPolicyUnchanged) {
  const std::string policy = temp_path("policy.json");
  util::write_file_atomic(policy, "the policy a previous search wrote\n");
  const auto text = limpq_in_temp_dir("search --indicators '" + kIndicators + "' --bitops W3A3");
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_THAT(text.output, HasSubstr("layer1.0.conv1"));
  const auto json = limpq_in_temp_dir("search --indicators '" + kIndicators + "' --bitops 0.35 --json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  const auto j = nlohmann::json::parse(json.output.substr(json.output.rfind("\n{") + 1));
  EXPECT_EQ(j["policy"]["format"], "limpq.policy/1");
  const auto sweep = limpq_in_temp_dir("search --indicators '" + kIndicators + "' --sweep 3 --sweep-from W2A2 --sweep-to W4A4");
  ASSERT_EQ(sweep.exit_code, 0) << sweep.output;
  EXPECT_EQ(util::read_file(policy), "the policy a previous search wrote\n");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(temp_dir()), std::filesystem::directory_iterator()), 1)
      << "nothing else written";
  // With --out the policy is written.
  ASSERT_EQ(limpq_in_temp_dir("search --indicators '" + kIndicators + "' --bitops W3A3 --out policy.json").exit_code, 0);
  EXPECT_THAT(util::read_file(policy), HasSubstr("limpq.policy/1"));
}

// What the output says is what happened: a recalibrating eval says so; one
// layer's indicators trained alone are labelled as that layer, not as a
// uniform precision.
TEST_F(CliTest, MessagesSayWhatActuallyHappened) {
  const std::string data = limpq::testing::write_synthetic_mnist(temp_path("data"), 96, 32);
  const std::string common = " --dataset mnist --root '" + data + "' --batch-size 16 --threads 1 --workers 1 ";
  const auto fp = limpq_in_temp_dir("train" + common + "--epochs 1 --out-dir fp");
  ASSERT_EQ(fp.exit_code, 0) << fp.output;
  const auto eval = limpq_in_temp_dir("eval --checkpoint fp/checkpoint.pt --bn-recalibration-batches 2");
  ASSERT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_THAT(eval.output, HasSubstr("batch-norm statistics re-estimated over 2 training batches"));
  const auto alone = limpq_in_temp_dir("indicators" + common +
                                       "--weights fp/checkpoint.pt --only-layer layer2.0.conv1 --candidates 3 "
                                       "--epochs 1 --out-dir alone");
  ASSERT_EQ(alone.exit_code, 0) << alone.output;
  EXPECT_THAT(alone.output, HasSubstr("layer2.0.conv1 alone at W3A3: test top1"));
  EXPECT_THAT(alone.output, ::testing::Not(HasSubstr("uniform W3A3")));
}

}  // namespace
}  // namespace limpq
