// The command-line tool as a user meets it, run as a process: what a
// command writes (and does not write) where the README's lines lead.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>

#include "limpq/cli/options.h"
#include "limpq/data/datasets.h"
#include "limpq/dist/launch.h"
#include "limpq/train/pipeline.h"
#include "limpq/deploy/export.h"
#include "limpq/deploy/report.h"
#include "limpq/models/cost.h"
#include "limpq/search/compare.h"
#include "limpq/search/search.h"
#include "limpq/train/evaluate.h"
#include "limpq/train/sensitivity.h"
#include "limpq/models/model.h"
#include "limpq/train/config.h"
#include "limpq/train/options.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/options.h"
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
  // Files named by flags that are not there: the flag and the file are named.
  EXPECT_THAT(limpq_in_temp_dir("eval --checkpoint fp/checkpoint.pt --policy nope.json").output,
              HasSubstr("eval: the policy file 'nope.json' (--policy) does not exist"));
  EXPECT_THAT(limpq_in_temp_dir("report --run nowhere").output,
              HasSubstr("report: --run 'nowhere' is not a folder"));
  const auto alone = limpq_in_temp_dir("indicators" + common +
                                       "--weights fp/checkpoint.pt --only-layer layer2.0.conv1 --candidates 3 "
                                       "--epochs 1 --out-dir alone");
  ASSERT_EQ(alone.exit_code, 0) << alone.output;
  EXPECT_THAT(alone.output, HasSubstr("layer2.0.conv1 alone at W3A3: test top1"));
  EXPECT_THAT(alone.output, ::testing::Not(HasSubstr("uniform W3A3")));
}

// Every flag of a command shows, in --help, the default of the options
// struct field it sets: the help cannot drift from the code, nor the
// commands from the recipes `limpq run` uses (train_recipe, finetune_recipe and
// indicator_recipe).
class FlagDefaultsTest : public CliTest {
 protected:
  template <typename Options>
  void expect_defaults(const std::string& command, Options options) {
    commands_.insert(command);
    const auto help = util::run_process({cli(), command, "--help"});
    ASSERT_EQ(help.exit_code, 0) << help.output;
    options.visit([&](const char* name, auto& field, const char*) {
      const std::string flag = "--" + util::flag_name(name) + " " + util::type_name(field);
      const std::string value = util::format_value(field);
      EXPECT_THAT(help.output, HasSubstr(value.empty() ? flag : flag + "=" + value)) << command << " " << name;
      ++checked_;
    });
  }
  int checked_ = 0;
  std::set<std::string> commands_;
};

TEST_F(FlagDefaultsTest, EveryFlagShowsItsStructsDefault) {
  for (const char* command : {"train", "finetune", "indicators"}) {
    expect_defaults(command, data::DataOptions());
    expect_defaults(command, models::ModelOptions());
    // Each command writes into its own default folder.
    expect_defaults(command, train::RunOptions().out_dir(std::string("runs/") + command));
  }
  expect_defaults("train", train::train_recipe());
  expect_defaults("finetune", train::finetune_recipe());
  expect_defaults("indicators", train::indicator_recipe());
  expect_defaults("finetune", train::FinetuneOptions());
  expect_defaults("indicators", train::IndicatorOptions());
  expect_defaults("cost", models::ModelOptions());
  expect_defaults("cost", models::CostOptions());
  expect_defaults("search", search::SearchOptions());
  expect_defaults("search", search::SweepOptions());
  expect_defaults("eval", train::EvalOptions());
  expect_defaults("eval", data::DataOptions());
  expect_defaults("export", deploy::ExportOptions());
  expect_defaults("report", deploy::ReportOptions());
  expect_defaults("sensitivity", train::SensitivityOptions());
  expect_defaults("sensitivity", train::SensitivityConfig());
  expect_defaults("compare-indicators", search::CompareOptions());
  // The front end's own options, each group declared once (cli/options.h).
  for (const char* command : {"train", "finetune", "indicators"}) expect_defaults(command, cli::TrainInput());
  for (const char* command : {"train", "finetune", "indicators", "eval", "cost", "search", "sensitivity",
                              "compare-indicators", "run"}) {
    expect_defaults(command, cli::JsonOutput());
  }
  expect_defaults("eval", cli::EvalInput());
  expect_defaults("search", cli::SearchFiles());
  expect_defaults("sensitivity", cli::SensitivityOutput());
  train::PipelineConfig pipeline;
  expect_defaults("run", cli::Only<train::RunOptions>{pipeline.run, {"out_dir"}});
  expect_defaults("launch", dist::LaunchOptions());
  EXPECT_GT(checked_, 170);
  // Every subcommand `limpq --help` lists was checked.
  const auto top = util::run_process({cli(), "--help"});
  const auto subcommands = top.output.substr(top.output.find("Subcommands:"));
  for (const char* command : {"run", "export", "report", "launch", "cost", "search", "sensitivity",
                              "compare-indicators", "train", "finetune", "indicators", "eval"}) {
    EXPECT_THAT(subcommands, HasSubstr(std::string("  ") + command + " ")) << command;
    EXPECT_TRUE(commands_.count(command)) << command << " has no flag defaults checked";
  }
}

// A flag takes one value: what follows is the command's positional
// arguments (run's config, launch's worker command after --).
TEST_F(CliTest, AFlagTakesOneValueAndLeavesTheRestToPositionals) {
  const auto run = limpq_in_temp_dir("run --out-dir elsewhere nothere.yaml");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_THAT(run.output, HasSubstr("config 'nothere.yaml': cannot open file"));
  const auto launch = limpq_in_temp_dir("launch --nproc 1 -- limpq cost --arch resnet20 --json");
  EXPECT_EQ(launch.exit_code, 0) << launch.output;
  EXPECT_THAT(launch.output, HasSubstr("\"macs\""));
}

// `limpq finetune` and the fine-tuning stage of `limpq run`, given the same
// policy, weights, data and seed, train the same network: one recipe.
TEST_F(CliTest, FinetuneEqualsTheRunStage) {
  const std::string data = limpq::testing::write_synthetic_mnist(temp_path("data"), 96, 32);
  const std::string common = " --dataset mnist --root '" + data + "' --batch-size 16 --threads 1 --workers 1 ";
  ASSERT_EQ(limpq_in_temp_dir("train" + common + "--epochs 1 --out-dir fp").exit_code, 0);
  util::write_file_atomic(temp_path("run.yaml"),
                          "data: {dataset: mnist, root: '" + data + "', batch_size: 16, workers: 1}\n"
                          "model: {weights: fp/checkpoint.pt}\n"
                          "indicators: {candidates: [4, 3, 2], epochs: 1}\n"
                          "search: {bitops: W3A3}\n"
                          "finetune: {epochs: 1}\n"
                          "run: {out_dir: run, threads: 1}\n");
  const auto run = limpq_in_temp_dir("run run.yaml");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto ft = limpq_in_temp_dir("finetune" + common + "--weights fp/checkpoint.pt --policy run/policy.json "
                                    "--epochs 1 --out-dir ft --json");
  ASSERT_EQ(ft.exit_code, 0) << ft.output;
  auto last_metrics = [&](const std::string& dir) {
    std::string last, line;
    std::istringstream in(util::read_file(temp_path(dir + "/metrics.jsonl")));
    while (std::getline(in, line)) last = line;
    return nlohmann::json::parse(last);
  };
  const auto a = last_metrics("run/finetune_policy"), b = last_metrics("ft");
  ASSERT_TRUE(a.contains("test") && b.contains("test")) << a.dump() << "\n" << b.dump();
  EXPECT_EQ(a["test"]["top1"], b["test"]["top1"]);
  EXPECT_EQ(a["test"]["loss"], b["test"]["loss"]);
  EXPECT_EQ(a["train_loss"], b["train_loss"]);
  EXPECT_EQ(a["bn_recalibration_batches"], b["bn_recalibration_batches"]);
}

}  // namespace
}  // namespace limpq
