// limpq: mixed-precision quantization from learned layer-wise importance.
//
// A thin command-line front end: each subcommand fills the library's options
// structs (from a YAML config and/or flags) and calls one library function.
#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "limpq/cli/options.h"
#include "limpq/deploy/export.h"
#include "limpq/deploy/packed.h"
#include "limpq/deploy/report.h"
#include "limpq/dist/dist.h"
#include "limpq/dist/launch.h"
#include "limpq/models/cost.h"
#include "limpq/search/compare.h"
#include "limpq/search/search.h"
#include "limpq/train/commands.h"
#include "limpq/train/pipeline.h"
#include "limpq/train/sensitivity.h"
#include "limpq/train/trainer.h"
#include "limpq/util/options.h"
#include "limpq/util/progress.h"
#include "limpq/util/runtime.h"
#include "limpq/util/signals.h"

namespace {

using limpq::util::FlagSet;

// `limpq train`, `limpq finetune` and `limpq indicators`: the trainer, each
// from its own recipe and with its own config sections.
struct TrainCommand {
  limpq::train::TrainCommand kind;
  limpq::train::TrainConfig config;
  limpq::cli::TrainInput input;
  limpq::cli::JsonOutput output;
  FlagSet flags;

  explicit TrainCommand(limpq::train::TrainCommand k) : kind(k), config(limpq::train::command_config(k)) {}

  void add_to(CLI::App& app) {
    CLI::App* cmd = app.add_subcommand(command_name(kind), command_description(kind));
    flags.add(*cmd, input, "Input");
    flags.add(*cmd, output, "Output");
    flags.add(*cmd, config.data, "Data");
    flags.add(*cmd, config.model, "Model");
    flags.add(*cmd, config.optim, "Train");
    flags.add(*cmd, config.run, "Run");
    if (kind == limpq::train::TrainCommand::kFinetune) flags.add(*cmd, config.quant, "Quantization");
    if (kind == limpq::train::TrainCommand::kIndicators) flags.add(*cmd, config.indicators, "Indicators");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    if (!input.config.empty()) {
      limpq::util::load_config(input.config, command_sections(config, kind));
      flags.apply();  // flags given override the file
    }
    limpq::train::check_command(config, kind);
    const auto result = limpq::train::run_train(config, input.resume);
    if (!limpq::dist::is_main()) return;  // data-parallel workers: rank 0 reports
    if (output.json) {
      std::cout << result.to_json().dump() << std::endl;
    } else {
      fmt::print("{}", result.to_text(config.indicators.only_layer()));
    }
  }
};

struct EvalCommand {
  limpq::data::DataOptions data;
  limpq::train::EvalOptions options;
  limpq::cli::EvalInput input;
  limpq::models::ModelOptions model;  // --onnx alone
  limpq::cli::JsonOutput output;
  FlagSet flags, data_flags;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("eval", "Evaluate a checkpoint, or an ONNX network's own weights: top-1, top-5 and loss");
    limpq::cli::Only<limpq::models::ModelOptions> onnx{model, {"onnx"}};
    flags.add(*cmd, input, "Input");
    flags.add(*cmd, onnx, "Input");
    flags.add(*cmd, output, "Output");
    flags.add(*cmd, options, "Evaluation");
    // Data flags override the data options recorded in the checkpoint.
    data_flags.add(*cmd, data, "Data (default: as recorded in the checkpoint)");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    const std::string& onnx = model.onnx();
    std::string checkpoint = input.checkpoint;
    TORCH_CHECK(checkpoint.empty() != onnx.empty(), "eval: give --checkpoint FILE or --onnx FILE (one of them)");
    // A checkpoint, a packed model from limpq export, or an ONNX file.
    const auto ckpt = !onnx.empty()                               ? limpq::train::onnx_checkpoint(onnx)
                      : limpq::deploy::is_packed_file(checkpoint) ? limpq::deploy::read_packed(checkpoint)
                                                                  : limpq::train::load_checkpoint(checkpoint);
    if (!onnx.empty()) checkpoint = onnx;
    data = limpq::train::data_options_of(ckpt);
    data_flags.apply();
    const auto r = limpq::train::run_eval(ckpt, options, data);
    if (!limpq::dist::is_main()) return;
    if (options.bn_recalibration_batches() > 0 && !output.json) {
      fmt::print("batch-norm statistics re-estimated over {} training batches before evaluating\n",
                 options.bn_recalibration_batches());
    }
    if (output.json) {
      nlohmann::ordered_json j = {{"checkpoint", checkpoint}, {"arch", ckpt.arch}, {"split", options.split()}};
      j.update(r.to_json());
      std::cout << j.dump() << std::endl;
    } else {
      fmt::print("{} on {} {} ({} images): top1 {:.2f}%  top5 {:.2f}%  loss {:.4f}\n", ckpt.arch, data.dataset(),
                 options.split(), r.count, r.top1, r.top5, r.loss);
      fmt::print("{}", r.cost_text());
    }
  }
};

// `limpq cost`: the per-layer cost table of a model at an input resolution
// (LIMPQ.md section 5), traced from a forward pass.
struct CostCommand {
  limpq::models::ModelOptions model;
  limpq::models::CostOptions options;
  limpq::cli::JsonOutput output;
  FlagSet flags;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("cost", "Per-layer MACs, parameters, BitOps and size of a model");
    flags.add(*cmd, model, "Model");
    flags.add(*cmd, options, "Cost");
    flags.add(*cmd, output, "Output");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    const auto table = limpq::models::cost_table(model, options);
    if (output.json) {
      std::cout << table.to_json(/*with_layers=*/true).dump() << std::endl;
      return;
    }
    fmt::print("{}", table.to_text());
  }
};

// `limpq search`: indicators + budget -> policy (LIMPQ.md section 6).
struct SearchCommand {
  limpq::search::SearchOptions options;
  limpq::search::SweepOptions sweep;
  limpq::cli::SearchFiles files;
  limpq::cli::JsonOutput output;
  FlagSet flags;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("search", "Search the mixed-precision policy for a budget from an indicators file");
    flags.add(*cmd, files, "Files");
    flags.add(*cmd, output, "Output");
    flags.add(*cmd, options, "Search");
    flags.add(*cmd, sweep, "Sweep");
    cmd->callback([this] { run(); });
  }

  void run_sweep(const limpq::quant::Indicators& indicators) {
    TORCH_CHECK(options.bitops().empty(),
                "search: --sweep replaces --bitops; set the range with --sweep-from/--sweep-to");
    const auto points = limpq::search::run_sweep(indicators, options, sweep);
    const std::string prefix = limpq::search::write_sweep(files.out, points);
    if (output.json) {
      std::cout << limpq::search::sweep_to_json(points).dump() << std::endl;
      return;
    }
    fmt::print("{}", limpq::search::sweep_text(points));
    if (!prefix.empty()) fmt::print("sweep written to {}.csv and {}.json\n", prefix, prefix);
  }

  void run() {
    flags.apply();
    TORCH_CHECK(!files.indicators.empty(), "search: give the indicators to search: --indicators FILE");
    if (!files.constraint.empty()) {
      options.extra({limpq::search::read_constraint_csv(files.constraint, files.constraint_budget)});
    }
    auto indicators = limpq::quant::read_indicators(files.indicators);
    if (const auto& seed = files.random_objective) {
      TORCH_CHECK(*seed >= 0, "search: --random-objective takes a seed >= 0, got ", *seed);
      indicators = limpq::search::random_indicators(indicators, static_cast<uint64_t>(*seed));
    }
    if (sweep.points() > 0) {
      run_sweep(indicators);
      return;
    }
    const auto r = limpq::search::run_search(indicators, options);
    const std::string& out = files.out;
    if (!out.empty()) limpq::quant::write_policy(out, r.policy);
    if (output.json) {
      auto j = r.to_json();
      j["policy"] = out.empty() ? limpq::quant::policy_to_json(r.policy) : nlohmann::ordered_json(out);
      std::cout << j.dump() << std::endl;
      return;
    }
    fmt::print("{}", limpq::search::search_text(r));
    if (!out.empty()) fmt::print("policy written to {}\n", out);
  }
};

// `limpq compare-indicators A.json B.json`: rank agreement of two criteria
// across layers.
struct CompareCommand {
  limpq::search::CompareOptions options;
  limpq::cli::CompareArgs files;
  limpq::cli::JsonOutput output;
  FlagSet flags;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("compare-indicators",
                                   "Rank correlations (Spearman, Kendall) across layers between two indicators files, "
                                   "per bit-width, for weights, activations and I_a + alpha I_w");
    limpq::cli::add_positionals(*cmd, files);
    flags.add(*cmd, output, "Output");
    flags.add(*cmd, options, "Compare");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    const std::string &path_a = files.a, &path_b = files.b;
    const auto c = limpq::search::compare_indicator_files(path_a, path_b, options);
    if (output.json) {
      auto j = c.to_json();
      j["a"] = {{"file", path_a}, {"criterion", options.criterion_a()}};
      j["b"] = {{"file", path_b}, {"criterion", options.criterion_b()}};
      std::cout << j.dump() << std::endl;
      return;
    }
    fmt::print("{}", limpq::search::comparison_to_text(c, fmt::format("{} [{}]", path_a, options.criterion_a()),
                                                       fmt::format("{} [{}]", path_b, options.criterion_b())));
  }
};

// `limpq sensitivity --method hessian`: the Hessian-trace criterion per
// layer and bit-width, written in the indicators format for `limpq search`.
struct SensitivityCommand {
  limpq::train::SensitivityConfig config;
  limpq::cli::SensitivityOutput files;
  limpq::cli::JsonOutput output;
  FlagSet flags;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "sensitivity",
        "Per-layer sensitivity of a full-precision model, written as an indicators file that limpq search and "
        "limpq compare-indicators read (searched with alpha 1): --method drop measures the loss increase with each "
        "tensor alone quantized (on --val-size held-out examples); --method hessian is HAWQ-V3's Hessian trace "
        "times the quantization error");
    flags.add(*cmd, files, "Output");
    flags.add(*cmd, output, "Output");
    flags.add(*cmd, config, "Run");
    flags.add(*cmd, config.data, "Data");
    flags.add(*cmd, config.model, "Model");
    flags.add(*cmd, config.sensitivity, "Sensitivity");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    limpq::util::Stopwatch clock;
    const std::string& out = files.out;
    // The drop method keeps its measurements beside --out as it goes.
    config.partial_path = out + ".partial";
    const auto ind = limpq::train::run_sensitivity(config);
    if (!limpq::dist::is_main()) return;
    limpq::quant::write_indicators(out, ind);
    std::filesystem::remove(config.partial_path);
    if (output.json) {
      std::cout << nlohmann::ordered_json({{"indicators", out}, {"seconds", clock.seconds()}}).dump() << std::endl;
      return;
    }
    fmt::print("{}", limpq::train::sensitivity_text(ind));
    fmt::print("written to {}  [{}]\n", out, limpq::util::format_duration(clock.seconds()));
  }
};

// `limpq run CONFIG.yaml`: the whole pipeline, stages cached in run.out_dir.
struct RunCommand {
  limpq::train::PipelineConfig config;
  limpq::cli::RunArgs args;
  limpq::cli::JsonOutput output;
  FlagSet flags;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("run",
                                   "The whole pipeline: full-precision training (or given weights) -> indicators -> "
                                   "search -> fine-tuning -> evaluation, every stage cached and resumable");
    limpq::cli::add_positionals(*cmd, args);
    limpq::cli::Only<limpq::train::RunOptions> out_dir{config.run, {"out_dir"}};
    flags.add(*cmd, out_dir, "Run (overrides the config's run section)");
    flags.add(*cmd, output, "Output");
    cmd->callback([this] { run(); });
  }

  void run() {
    config = limpq::train::load_pipeline_config(args.config);
    flags.apply();
    const auto result = limpq::train::run_pipeline(config);
    const std::string report = limpq::deploy::write_run_report(config.run.out_dir());
    if (output.json) {
      auto j = result.to_json();
      j["report"] = report;
      std::cout << j.dump() << std::endl;
      return;
    }
    fmt::print("{}", limpq::train::pipeline_table(result));
    fmt::print("policy: {} (average bits: weights {:.2f}, activations {:.2f})\n", result.policy,
               result.search.average_weight_bits, result.search.average_act_bits);
    fmt::print("report: {}\n", report);
  }
};


// `limpq export`: a fine-tuned model in a deployable form.
struct ExportCommand {
  limpq::deploy::ExportOptions options;
  FlagSet flags;

  void add_to(CLI::App& app) {
    CLI::App* cmd = app.add_subcommand("export", "Export a fine-tuned quantized model: --format packed (bit-packed "
                                                 "integer weights, limpq.packed/1), onnx (QDQ graph) or state-dict "
                                                 "(a PyTorch state_dict with each layer's learned steps and bits)");
    flags.add(*cmd, options, "Export");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    fmt::print("{}", limpq::deploy::export_model(options));
  }
};

// `limpq report`: the HTML page of a search (and its pipeline run).
struct ReportCommand {
  limpq::deploy::ReportOptions options;
  FlagSet flags;

  void add_to(CLI::App& app) {
    CLI::App* cmd = app.add_subcommand("report", "One self-contained HTML page of a policy: bit-widths, indicator "
                                                 "curves, Pareto frontier, budget use and accuracy");
    flags.add(*cmd, options, "Report");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    fmt::print("report written to {}\n", limpq::deploy::write_report(options));
  }
};

// `limpq launch -n N -- limpq train ...`: N local data-parallel workers with
// the rendezvous variables torchrun sets, without Python. A worker that
// fails stops the others; Ctrl-C is forwarded so that each checkpoints.
struct LaunchCommand {
  limpq::dist::LaunchOptions options;
  limpq::cli::LaunchArgs args;
  FlagSet flags;
  int exit_status = 0;

  void add_to(CLI::App& app) {
    CLI::App* cmd = app.add_subcommand(
        "launch", "Start N local data-parallel workers of a limpq command (like torchrun --nproc-per-node N)");
    flags.add(*cmd, options, "Launch");
    limpq::cli::add_positionals(*cmd, args);
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    exit_status = limpq::dist::launch_local(args.command, options);
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"limpq: mixed-precision quantization from learned layer-wise importance"};
  app.require_subcommand(1);
  TrainCommand train(limpq::train::TrainCommand::kTrain);
  TrainCommand finetune(limpq::train::TrainCommand::kFinetune);
  TrainCommand indicators(limpq::train::TrainCommand::kIndicators);
  EvalCommand eval;
  CostCommand cost;
  SearchCommand search;
  SensitivityCommand sensitivity;
  CompareCommand compare;
  RunCommand run;
  LaunchCommand launch;
  ExportCommand export_command;
  ReportCommand report;
  run.add_to(app);
  export_command.add_to(app);
  report.add_to(app);
  launch.add_to(app);
  cost.add_to(app);
  search.add_to(app);
  sensitivity.add_to(app);
  compare.add_to(app);
  train.add_to(app);
  finetune.add_to(app);
  indicators.add_to(app);
  eval.add_to(app);
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
