#include "limpq/util/options.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "limpq/data/datasets.h"
#include "limpq/search/search.h"
#include "limpq/train/pipeline.h"
#include "limpq/train/options.h"
#include "support/test_support.h"

namespace limpq::util {
namespace {

using limpq::testing::SeededTest;
using ::testing::HasSubstr;

class OptionsTest : public SeededTest {};

using limpq::testing::error_of;

TEST_F(OptionsTest, YamlFillsEveryTypeOfField) {
  const std::string path = temp_path("a.yaml");
  testing::write_bytes(path,
                       "data:\n  dataset: cifar10\n  batch_size: 64\n  augment: false\n"
                       "train:\n  lr: 0.05\n  epochs: 3\n");
  data::DataOptions data;
  train::OptimOptions optim;
  load_config(path, {section("data", data), section("train", optim)});
  EXPECT_EQ(data.dataset(), "cifar10");
  EXPECT_EQ(data.batch_size(), 64);
  EXPECT_FALSE(data.augment());
  EXPECT_DOUBLE_EQ(optim.lr(), 0.05);
  EXPECT_EQ(optim.epochs(), 3);
  EXPECT_EQ(data.workers(), 2) << "keys not in the file keep their defaults";
}

TEST_F(OptionsTest, UnknownKeyIsNamedWithTheKnownOnes) {
  const std::string path = temp_path("bad.yaml");
  testing::write_bytes(path, "train:\n  epochz: 3\n");
  train::OptimOptions optim;
  const std::string msg = error_of([&] { load_config(path, {section("train", optim)}); });
  EXPECT_THAT(msg, HasSubstr("unknown key 'epochz'"));
  EXPECT_THAT(msg, HasSubstr(path));
  EXPECT_THAT(msg, HasSubstr("epochs"));
}

TEST_F(OptionsTest, UnknownSectionIsNamed) {
  const std::string path = temp_path("bad.yaml");
  testing::write_bytes(path, "trian:\n  epochs: 3\n");
  train::OptimOptions optim;
  const std::string msg = error_of([&] { load_config(path, {section("train", optim)}); });
  EXPECT_THAT(msg, HasSubstr("unknown section 'trian'"));
}

TEST_F(OptionsTest, WrongTypeNamesFieldAndValue) {
  const std::string path = temp_path("bad.yaml");
  testing::write_bytes(path, "train:\n  epochs: many\n");
  train::OptimOptions optim;
  const std::string msg = error_of([&] { load_config(path, {section("train", optim)}); });
  EXPECT_THAT(msg, HasSubstr("train.epochs must be an integer, got 'many'"));
}

TEST_F(OptionsTest, InvalidYamlAndMissingFileAreReported) {
  const std::string path = temp_path("broken.yaml");
  testing::write_bytes(path, "train: [1, 2\n");
  train::OptimOptions optim;
  EXPECT_THAT(error_of([&] { load_config(path, {section("train", optim)}); }), HasSubstr("not valid YAML"));
  EXPECT_THAT(error_of([&] { load_config(temp_path("none.yaml"), {section("train", optim)}); }),
              HasSubstr("cannot open file"));
}

TEST_F(OptionsTest, FlagsOverrideTheConfigFile) {
  const std::string path = temp_path("a.yaml");
  testing::write_bytes(path, "train:\n  epochs: 3\n  lr: 0.5\n");
  train::OptimOptions optim;
  CLI::App app;
  FlagSet flags;
  flags.add(app, optim);
  const char* argv[] = {"limpq", "--epochs", "7", "--label-smoothing", "0"};
  app.parse(5, const_cast<char**>(argv));
  load_config(path, {section("train", optim)});
  flags.apply();
  EXPECT_EQ(optim.epochs(), 7);
  EXPECT_DOUBLE_EQ(optim.lr(), 0.5);
  EXPECT_DOUBLE_EQ(optim.label_smoothing(), 0.0);
}

// A flag given twice takes its last value, as in most command-line tools.
TEST_F(OptionsTest, AFlagGivenTwiceTakesTheLastValue) {
  train::OptimOptions optim;
  CLI::App app;
  FlagSet flags;
  flags.add(app, optim);
  const char* argv[] = {"limpq", "--epochs", "3", "--lr", "0.2", "--epochs", "1"};
  app.parse(7, const_cast<char**>(argv));
  flags.apply();
  EXPECT_EQ(optim.epochs(), 1);
  EXPECT_DOUBLE_EQ(optim.lr(), 0.2);
}

TEST_F(OptionsTest, BadFlagValueIsRefusedWhileParsing) {
  train::OptimOptions optim;
  CLI::App app;
  FlagSet flags;
  flags.add(app, optim);
  const char* argv[] = {"limpq", "--epochs", "2.5"};
  std::string error;
  try {
    app.parse(3, const_cast<char**>(argv));
  } catch (const CLI::ValidationError& e) {
    error = e.what();
  }
  EXPECT_THAT(error, HasSubstr("--epochs"));
  EXPECT_THAT(error, HasSubstr("value must be an integer, got '2.5'"));
  const char* good[] = {"limpq", "--lr", "1e-3", "--nesterov", "true"};
  app.parse(5, const_cast<char**>(good));
  flags.apply();
  EXPECT_DOUBLE_EQ(optim.lr(), 1e-3);
  EXPECT_TRUE(optim.nesterov());
}

TEST_F(OptionsTest, HelpShowsEachFlagsType) {
  train::OptimOptions optim;
  train::RunOptions run;
  train::IndicatorOptions indicators;
  CLI::App app;
  FlagSet flags;
  flags.add(app, optim);
  flags.add(app, run);
  flags.add(app, indicators);
  const std::string help = app.help();
  EXPECT_THAT(help, HasSubstr("--epochs INT=15"));
  EXPECT_THAT(help, HasSubstr("--lr FLOAT=0.1"));
  EXPECT_THAT(help, HasSubstr("--nesterov BOOL=false"));
  EXPECT_THAT(help, HasSubstr("--out-dir TEXT=runs/train"));
  EXPECT_THAT(help, HasSubstr("--candidates INT,...=6,5,4,3,2"));
  EXPECT_THAT(help, ::testing::Not(HasSubstr("per 128 images")));
}

// A boolean flag alone means true; with a value it takes the value.
TEST_F(OptionsTest, ABooleanFlagAloneMeansTrue) {
  for (const auto& [args, expected] : std::vector<std::pair<std::vector<std::string>, bool>>{
           {{"--nesterov"}, true}, {{"--nesterov", "false"}, false}, {{"--nesterov", "--epochs", "2"}, true}}) {
    train::OptimOptions optim;
    CLI::App app;
    FlagSet flags;
    flags.add(app, optim);
    std::vector<std::string> argv{"limpq"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> raw;
    for (auto& a : argv) raw.push_back(a.data());
    app.parse(static_cast<int>(raw.size()), raw.data());
    flags.apply();
    EXPECT_EQ(optim.nesterov(), expected) << args.size();
  }
}

// A list flag takes the values after it, separated by spaces or commas.
TEST_F(OptionsTest, AListFlagTakesEveryValue) {
  train::IndicatorOptions indicators;
  train::OptimOptions optim;
  CLI::App app;
  FlagSet flags;
  flags.add(app, indicators);
  flags.add(app, optim);
  const char* argv[] = {"limpq", "--candidates", "4", "3", "2", "--epochs", "2"};
  app.parse(7, const_cast<char**>(argv));
  flags.apply();
  EXPECT_EQ(indicators.candidates(), (std::vector<int64_t>{4, 3, 2}));
  EXPECT_EQ(optim.epochs(), 2);
}

// An optional field: unset by default (no default shown), set by a flag or
// a key, unset again by an empty value; JSON null when unset.
TEST_F(OptionsTest, OptionalFieldsAreUnsetUntilGiven) {
  search::SearchOptions options;
  EXPECT_TRUE(to_json(options)["alpha"].is_null());
  CLI::App app;
  FlagSet flags;
  flags.add(app, options);
  EXPECT_THAT(app.help(), HasSubstr("--alpha FLOAT "));
  const char* argv[] = {"limpq", "--alpha", "0.5"};
  app.parse(3, const_cast<char**>(argv));
  flags.apply();
  ASSERT_TRUE(options.alpha().has_value());
  EXPECT_DOUBLE_EQ(*options.alpha(), 0.5);
  from_yaml(YAML::Load("alpha:"), options, "search");
  EXPECT_FALSE(options.alpha().has_value());
  EXPECT_THAT(error_of([&] { from_yaml(YAML::Load("alpha: x"), options, "search"); }),
              HasSubstr("search.alpha must be a number, got 'x'"));
}

// `limpq run`'s search section is limpq search's options without
// fixed_bits (the pipeline takes it from finetune.fixed_bits).
TEST_F(OptionsTest, ExceptLeavesTheNamedFieldsOut) {
  train::SearchStageOptions stage;
  EXPECT_EQ(stage.bitops(), "W3A3");
  from_yaml(YAML::Load("{bitops: W2A3, alpha: 1, time_limit: 5}"), stage, "search");
  EXPECT_EQ(stage.bitops(), "W2A3");
  EXPECT_DOUBLE_EQ(stage.time_limit(), 5);
  EXPECT_THAT(error_of([&] { from_yaml(YAML::Load("fixed_bits: 4"), stage, "search"); }),
              HasSubstr("unknown key 'fixed_bits'"));
}

// Its finetune section takes the fixed layers from indicators.fixed_layers
// (the layers the search left out): a finetune.fixed_layers key would be
// overwritten, so it is refused.
TEST_F(OptionsTest, AKeyAStageOverridesIsRefused) {
  train::FinetuneStageOptions stage;
  from_yaml(YAML::Load("{fixed_bits: 6, epochs: 3}"), stage, "finetune");
  EXPECT_EQ(stage.quantize.fixed_bits(), 6);
  EXPECT_EQ(stage.optim.epochs(), 3);
  EXPECT_THAT(error_of([&] { from_yaml(YAML::Load("fixed_layers: [conv1]"), stage, "finetune"); }),
              HasSubstr("finetune: unknown key 'fixed_layers'"));
}

TEST_F(OptionsTest, ListsParseFromYamlAndCommaText) {
  std::vector<int64_t> v;
  parse_value(YAML::Load("[6, 5, 4]"), v, "x");
  EXPECT_EQ(v, (std::vector<int64_t>{6, 5, 4}));
  parse_value(YAML::Load("3,2"), v, "x");
  EXPECT_EQ(v, (std::vector<int64_t>{3, 2}));
  EXPECT_THAT(error_of([&] { parse_value(YAML::Load("[1, b]"), v, "cands"); }), HasSubstr("cands[1]"));
}

TEST_F(OptionsTest, JsonDumpRoundTripsThroughTheYamlLoader) {
  train::OptimOptions a;
  a.epochs(9).lr(0.3).nesterov(true);
  train::OptimOptions b;
  from_yaml(YAML::Load(to_json(a).dump()), b, "json");
  EXPECT_EQ(b.epochs(), 9);
  EXPECT_DOUBLE_EQ(b.lr(), 0.3);
  EXPECT_TRUE(b.nesterov());
}

}  // namespace
}  // namespace limpq::util
