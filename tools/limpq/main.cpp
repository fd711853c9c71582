// limpq: mixed-precision quantization from learned layer-wise importance.
//
// A thin command-line front end: each subcommand fills the library's options
// structs (from a YAML config and/or flags) and calls one library function.
#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "limpq/train/trainer.h"
#include "limpq/util/options.h"
#include "limpq/util/progress.h"

namespace {

using limpq::util::FlagSet;

struct TrainCommand {
  limpq::train::TrainConfig config;
  FlagSet flags;
  std::string config_path;
  bool resume = false;
  bool json = false;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("train", "Train a full-precision network");
    cmd->add_option("--config", config_path, "YAML config (sections data, model, train, run); flags override it")
        ->check(CLI::ExistingFile);
    cmd->add_flag("--resume", resume, "continue from <out-dir>/checkpoint.pt if it exists");
    cmd->add_flag("--json", json, "print the final result as one JSON line on stdout");
    flags.add(*cmd, config.data, "Data");
    flags.add(*cmd, config.model, "Model");
    flags.add(*cmd, config.optim, "Train");
    flags.add(*cmd, config.run, "Run");
    cmd->callback([this] { run(); });
  }

  void run() {
    if (!config_path.empty()) limpq::util::load_config(config_path, config.sections());
    flags.apply();
    const auto result = limpq::train::run_train(config, resume);
    if (json) {
      nlohmann::ordered_json j = {{"checkpoint", result.checkpoint},
                                  {"epochs", result.epochs},
                                  {"seconds", result.seconds},
                                  {"images_per_second", result.images_per_second},
                                  {"test", result.test.to_json()}};
      std::cout << j.dump() << std::endl;
    } else {
      fmt::print("test top1 {:.2f}%  top5 {:.2f}%  loss {:.4f}  ({} images)  checkpoint {}  [{}]\n", result.test.top1,
                 result.test.top5, result.test.loss, result.test.count, result.checkpoint,
                 limpq::util::format_duration(result.seconds));
    }
  }
};

struct EvalCommand {
  limpq::data::DataOptions data;
  limpq::train::EvalOptions options;
  FlagSet flags;
  std::string checkpoint;
  std::string split = "test";
  std::string device = "cpu";
  int64_t threads = 0;
  bool json = false;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("eval", "Evaluate a checkpoint: top-1, top-5 and loss");
    cmd->add_option("--checkpoint", checkpoint, "checkpoint written by limpq")->required()->check(CLI::ExistingFile);
    cmd->add_option("--split", split, "test | val")->default_str(split);
    cmd->add_option("--device", device, "cpu | cuda | cuda:N")->default_str(device);
    cmd->add_option("--threads", threads, "compute threads (0: all cores)")->default_str("0");
    cmd->add_flag("--json", json, "print one JSON line on stdout");
    // Data flags override the data options recorded in the checkpoint.
    flags.add(*cmd, data, "Data (default: as recorded in the checkpoint)");
    cmd->callback([this] { run(); });
  }

  void run() {
    const auto ckpt = limpq::train::load_checkpoint(checkpoint);
    data = limpq::train::data_options_of(ckpt);
    flags.apply();
    options.split(split).device(device).threads(threads);
    const auto r = limpq::train::run_eval(ckpt, options, data);
    if (json) {
      nlohmann::ordered_json j = {{"checkpoint", checkpoint}, {"arch", ckpt.arch}, {"split", split}};
      j.update(r.to_json());
      std::cout << j.dump() << std::endl;
    } else {
      fmt::print("{} on {} {} ({} images): top1 {:.2f}%  top5 {:.2f}%  loss {:.4f}\n", ckpt.arch, data.dataset(),
                 split, r.count, r.top1, r.top5, r.loss);
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"limpq: mixed-precision quantization from learned layer-wise importance"};
  app.require_subcommand(1);
  TrainCommand train;
  EvalCommand eval;
  train.add_to(app);
  eval.add_to(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const c10::Error& e) {
    std::cerr << "limpq: error: " << e.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "limpq: error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
