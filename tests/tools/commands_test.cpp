// The commands' library side (limpq/cli/commands.h), called as the front end
// calls it: what each writes, and that its text and its JSON say the same.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "limpq/cli/commands.h"
#include "limpq/quant/policy.h"
#include "limpq/util/atomic_file.h"
#include "support/test_support.h"

namespace limpq {
namespace {

using ::testing::HasSubstr;

const std::string kIndicators = std::string(LIMPQ_SEARCH_TESTDATA) + "/resnet20_fashion_mnist_indicators.json";
const std::string kDrop = std::string(LIMPQ_SEARCH_TESTDATA) + "/resnet20_fashion_mnist_drop.json";

class CommandsTest : public limpq::testing::SeededTest {};

search::SearchOptions budget(const std::string& bitops) {
  search::SearchOptions options;
  options.bitops(bitops);
  return options;
}

// With --out, the policy goes to the file and the JSON names it; without,
// the JSON holds the policy itself and nothing is written.
TEST_F(CommandsTest, SearchWritesThePolicyItReports) {
  cli::SearchFiles files;
  files.indicators = kIndicators;
  const auto printed = cli::search(files, budget("W3A3"), search::SweepOptions());
  EXPECT_EQ(printed.json["policy"]["format"], "limpq.policy/1");
  EXPECT_THAT(printed.text, HasSubstr("layer1.0.conv1"));
  EXPECT_THAT(printed.text, ::testing::Not(HasSubstr("written to")));

  files.out = temp_path("policy.json");
  const auto written = cli::search(files, budget("W3A3"), search::SweepOptions());
  EXPECT_EQ(written.json["policy"], files.out);
  EXPECT_THAT(written.text, HasSubstr("policy written to " + files.out));
  EXPECT_EQ(quant::policy_to_json(quant::read_policy(files.out)), printed.json["policy"]);
  EXPECT_EQ(written.json["achieved_bitops"], printed.json["achieved_bitops"]);
  EXPECT_EQ(written.json["status"], "optimal");
}

TEST_F(CommandsTest, SweepWritesItsTwoFilesAndRefusesABudget) {
  cli::SearchFiles files;
  files.indicators = kIndicators;
  files.out = temp_path("sweep");
  search::SweepOptions sweep;
  sweep.points(3).from("W2A2").to("W4A4");
  const auto out = cli::search(files, search::SearchOptions(), sweep);
  EXPECT_EQ(out.json.size(), 3u);
  EXPECT_TRUE(util::file_exists(files.out + ".csv"));
  EXPECT_TRUE(util::file_exists(files.out + ".json"));
  EXPECT_THAT(out.text, HasSubstr("sweep written to " + files.out + ".csv"));
  EXPECT_THROW(
      {
        try {
          cli::search(files, budget("W3A3"), sweep);
        } catch (const c10::Error& e) {
          EXPECT_THAT(e.what_without_backtrace(), HasSubstr("--sweep replaces --bitops"));
          throw;
        }
      },
      c10::Error);
}

TEST_F(CommandsTest, SearchNamesWhatIsMissingOrWrong) {
  cli::SearchFiles files;
  EXPECT_THROW(cli::search(files, budget("W3A3"), search::SweepOptions()), c10::Error);
  files.indicators = kIndicators;
  files.random_objective = -1;
  try {
    cli::search(files, budget("W3A3"), search::SweepOptions());
    FAIL() << "a negative seed was taken";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("--random-objective takes a seed >= 0, got -1"));
  }
}

TEST_F(CommandsTest, CompareLabelsEachFileWithItsCriterion) {
  cli::CompareArgs files{kIndicators, kDrop};
  search::CompareOptions options;
  options.criterion_a("noise");
  const auto out = cli::compare(files, options);
  EXPECT_EQ(out.json["a"]["file"], kIndicators);
  EXPECT_EQ(out.json["a"]["criterion"], "noise");
  EXPECT_EQ(out.json["b"]["criterion"], "step");
  EXPECT_THAT(out.text, HasSubstr(kIndicators + " [noise]"));
  EXPECT_THAT(out.text, HasSubstr(kDrop + " [step]"));
}

// The cost table's text has a row for each layer its JSON lists, with the
// layer's whole output shape for one image (1x16x28x28 for resnet20's first
// conv).
TEST_F(CommandsTest, CostTextAndJsonListTheSameLayers) {
  models::ModelOptions model;
  model.arch("resnet20");
  const auto out = cli::cost(model, models::CostOptions());
  ASSERT_TRUE(out.json.contains("layers"));
  ASSERT_GT(out.json["layers"].size(), 0u);
  const auto row_of = [&](const std::string& name) {
    const auto at = out.text.find("\n" + name + " ");
    return at == std::string::npos ? std::string() : out.text.substr(at + 1, out.text.find('\n', at + 1) - at - 1);
  };
  for (const auto& layer : out.json["layers"]) {
    std::string shape;
    for (const int64_t d : layer["output_shape"]) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    EXPECT_THAT(row_of(layer["name"]), HasSubstr(" " + shape + " ")) << layer["name"];
  }
  EXPECT_THAT(row_of("conv1"), HasSubstr(" 1x16x28x28 "));
}

TEST_F(CommandsTest, EvalTakesExactlyOneOfCheckpointAndOnnx) {
  models::ModelOptions model;
  EXPECT_THROW(cli::eval_target(cli::EvalInput(), model), c10::Error);
  model.onnx("a.onnx");
  cli::EvalInput input;
  input.checkpoint = "b.pt";
  try {
    cli::eval_target(input, model);
    FAIL() << "both were taken";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(), HasSubstr("one of them"));
  }
}

}  // namespace
}  // namespace limpq
