// limpq: mixed-precision quantization from learned layer-wise importance.
//
// A thin command-line front end: each subcommand binds its flags to the
// library's options structs (from a YAML config and/or flags), calls one
// library function and prints what it returns (limpq/cli/commands.h).
#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>

#include "limpq/cli/commands.h"
#include "limpq/cli/options.h"
#include "limpq/deploy/export.h"
#include "limpq/deploy/report.h"
#include "limpq/dist/launch.h"
#include "limpq/train/commands.h"
#include "limpq/util/options.h"
#include "limpq/util/runtime.h"
#include "limpq/util/signals.h"

namespace {

namespace cli = limpq::cli;
namespace train = limpq::train;
using limpq::util::FlagSet;

// A subcommand: flags bound to the options structs given to `add`, written
// into them before `run`.
class Command {
 public:
  Command(CLI::App& app, const char* name, const std::string& description)
      : cmd_(app.add_subcommand(name, description)) {
    cmd_->callback([this] {
      flags_.apply();
      run();
    });
  }
  virtual ~Command() = default;

 protected:
  template <typename Options>
  void add(Options& options, const char* group) {
    flags_.add(*cmd_, options, group);
  }
  // Flags given override what `run` read from a file.
  void apply_flags() const { flags_.apply(); }
  CLI::App& subcommand() { return *cmd_; }

 private:
  virtual void run() = 0;
  CLI::App* cmd_;
  FlagSet flags_;
};

// `limpq train`, `limpq finetune` and `limpq indicators`: the trainer, each
// from its own recipe and with its own config sections.
struct TrainCommand : Command {
  TrainCommand(CLI::App& app, train::TrainCommand kind)
      : Command(app, command_name(kind), command_description(kind)), kind_(kind), config_(command_config(kind)) {
    add(input_, "Input");
    add(output_, "Output");
    add(config_.data, "Data");
    add(config_.model, "Model");
    add(config_.optim, "Train");
    add(config_.run, "Run");
    if (kind == train::TrainCommand::kFinetune) add(config_.quant, "Quantization");
    if (kind == train::TrainCommand::kIndicators) add(config_.indicators, "Indicators");
  }

  void run() override {
    if (!input_.config.empty()) {
      limpq::util::load_config(input_.config, command_sections(config_, kind_));
      apply_flags();
    }
    train::check_command(config_, kind_);
    const auto result = train::run_train(config_, input_.resume);
    cli::print(cli::train_result(result, config_.indicators.only_layer()), output_);
  }
  train::TrainCommand kind_;
  train::TrainConfig config_;
  cli::TrainInput input_;
  cli::JsonOutput output_;
};

struct EvalCommand : Command {
  explicit EvalCommand(CLI::App& app)
      : Command(app, "eval", "Evaluate a checkpoint, or an ONNX network's own weights: top-1, top-5 and loss") {
    add(input_, "Input");
    add(onnx_, "Input");
    add(output_, "Output");
    add(options_, "Evaluation");
    // Data flags override the data options recorded in the checkpoint.
    data_flags_.add(subcommand(), data_, "Data (default: as recorded in the checkpoint)");
  }

  void run() override {
    const auto target = cli::eval_target(input_, model_);
    data_ = train::data_options_of(target.checkpoint);
    data_flags_.apply();
    cli::print(cli::evaluate(target, options_, data_), output_);
  }
  limpq::data::DataOptions data_;
  train::EvalOptions options_;
  cli::EvalInput input_;
  limpq::models::ModelOptions model_;
  cli::Only<limpq::models::ModelOptions> onnx_{model_, {"onnx"}};
  cli::JsonOutput output_;
  FlagSet data_flags_;
};

// `limpq cost`: the per-layer cost table of a model at an input resolution
// (LIMPQ.md section 5), traced from a forward pass.
struct CostCommand : Command {
  explicit CostCommand(CLI::App& app) : Command(app, "cost", "Per-layer MACs, parameters, BitOps and size of a model") {
    add(model_, "Model");
    add(options_, "Cost");
    add(output_, "Output");
  }

  void run() override { cli::print(cli::cost(model_, options_), output_); }
  limpq::models::ModelOptions model_;
  limpq::models::CostOptions options_;
  cli::JsonOutput output_;
};

// `limpq search`: indicators + budget -> policy (LIMPQ.md section 6).
struct SearchCommand : Command {
  explicit SearchCommand(CLI::App& app)
      : Command(app, "search", "Search the mixed-precision policy for a budget from an indicators file") {
    add(files_, "Files");
    add(output_, "Output");
    add(options_, "Search");
    add(sweep_, "Sweep");
  }

  void run() override { cli::print(cli::search(files_, options_, sweep_), output_); }
  limpq::search::SearchOptions options_;
  limpq::search::SweepOptions sweep_;
  cli::SearchFiles files_;
  cli::JsonOutput output_;
};

// `limpq compare-indicators A.json B.json`: rank agreement of two criteria
// across layers.
struct CompareCommand : Command {
  explicit CompareCommand(CLI::App& app)
      : Command(app, "compare-indicators",
                "Rank correlations (Spearman, Kendall) across layers between two indicators files, per bit-width, "
                "for weights, activations and I_a + alpha I_w") {
    cli::add_positionals(subcommand(), files_);
    add(output_, "Output");
    add(options_, "Compare");
  }

  void run() override { cli::print(cli::compare(files_, options_), output_); }
  limpq::search::CompareOptions options_;
  cli::CompareArgs files_;
  cli::JsonOutput output_;
};

// `limpq sensitivity --method hessian`: the Hessian-trace criterion per
// layer and bit-width, written in the indicators format for `limpq search`.
struct SensitivityCommand : Command {
  explicit SensitivityCommand(CLI::App& app)
      : Command(app, "sensitivity",
                "Per-layer sensitivity of a full-precision model, written as an indicators file that limpq search "
                "and limpq compare-indicators read (searched with alpha 1): --method drop measures the loss increase "
                "with each tensor alone quantized (on --val-size held-out examples); --method hessian is HAWQ-V3's "
                "Hessian trace times the quantization error") {
    add(files_, "Output");
    add(output_, "Output");
    add(config_, "Run");
    add(config_.data, "Data");
    add(config_.model, "Model");
    add(config_.sensitivity, "Sensitivity");
  }

  void run() override { cli::print(cli::sensitivity(config_, files_), output_); }
  train::SensitivityConfig config_;
  cli::SensitivityOutput files_;
  cli::JsonOutput output_;
};

// `limpq run CONFIG.yaml`: the whole pipeline, stages cached in run.out_dir.
struct RunCommand : Command {
  explicit RunCommand(CLI::App& app)
      : Command(app, "run",
                "The whole pipeline: full-precision training (or given weights) -> indicators -> search -> "
                "fine-tuning -> evaluation, every stage cached and resumable") {
    cli::add_positionals(subcommand(), args_);
    add(out_dir_, "Run (overrides the config's run section)");
    add(output_, "Output");
  }

  void run() override {
    config_ = train::load_pipeline_config(args_.config);
    apply_flags();
    cli::print(cli::pipeline(config_), output_);
  }
  train::PipelineConfig config_;
  cli::Only<train::RunOptions> out_dir_{config_.run, {"out_dir"}};
  cli::RunArgs args_;
  cli::JsonOutput output_;
};

// `limpq export`: a fine-tuned model in a deployable form.
struct ExportCommand : Command {
  explicit ExportCommand(CLI::App& app)
      : Command(app, "export",
                "Export a fine-tuned quantized model: --format packed (bit-packed integer weights, limpq.packed/1), "
                "onnx (QDQ graph) or state-dict (a PyTorch state_dict with each layer's learned steps and bits)") {
    add(options_, "Export");
  }

  void run() override { fmt::print("{}", limpq::deploy::export_model(options_)); }
  limpq::deploy::ExportOptions options_;
};

// `limpq report`: the HTML page of a search (and its pipeline run).
struct ReportCommand : Command {
  explicit ReportCommand(CLI::App& app)
      : Command(app, "report",
                "One self-contained HTML page of a policy: bit-widths, indicator curves, Pareto frontier, budget use "
                "and accuracy") {
    add(options_, "Report");
  }

  void run() override { fmt::print("report written to {}\n", limpq::deploy::write_report(options_)); }
  limpq::deploy::ReportOptions options_;
};

// `limpq launch --nproc N -- limpq train ...`: N local data-parallel workers
// with the rendezvous variables torchrun sets, without Python. A worker that
// fails stops the others; Ctrl-C is forwarded so that each checkpoints.
struct LaunchCommand : Command {
  explicit LaunchCommand(CLI::App& app)
      : Command(app, "launch",
                "Start N local data-parallel workers of a limpq command (like torchrun --nproc-per-node N)") {
    add(options_, "Launch");
    cli::add_positionals(subcommand(), args_);
  }
  int exit_status = 0;

  void run() override { exit_status = limpq::dist::launch_local(args_.command, options_); }
  limpq::dist::LaunchOptions options_;
  cli::LaunchArgs args_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"limpq: mixed-precision quantization from learned layer-wise importance"};
  app.require_subcommand(1);
  RunCommand run(app);
  ExportCommand export_command(app);
  ReportCommand report(app);
  LaunchCommand launch(app);
  CostCommand cost(app);
  SearchCommand search(app);
  SensitivityCommand sensitivity(app);
  CompareCommand compare(app);
  TrainCommand train(app, train::TrainCommand::kTrain);
  TrainCommand finetune(app, train::TrainCommand::kFinetune);
  TrainCommand indicators(app, train::TrainCommand::kIndicators);
  EvalCommand eval(app);
  // Ctrl-C / SIGTERM: training finishes its step, checkpoints and throws
  // Interrupted; a second signal exits at once.
  const limpq::util::StopOnSignal stop_on_signal;
  try {
    limpq::util::retain_freed_host_memory();
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const limpq::util::Interrupted& e) {
    std::cerr << "limpq: " << e.what() << std::endl;
    return e.exit_status();
  } catch (const c10::Error& e) {
    std::cerr << "limpq: error: " << e.what_without_backtrace() << std::endl;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "limpq: error: " << e.what() << std::endl;
    return 1;
  }
  return launch.exit_status;
}
