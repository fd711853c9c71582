// limpq: mixed-precision quantization from learned layer-wise importance.
//
// A thin command-line front end: each subcommand fills the library's options
// structs (from a YAML config and/or flags) and calls one library function.
#include <c10/util/Exception.h>
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <optional>

#include "limpq/deploy/export.h"
#include "limpq/deploy/packed.h"
#include "limpq/deploy/report.h"
#include "limpq/dist/dist.h"
#include "limpq/dist/launch.h"
#include "limpq/models/cost.h"
#include "limpq/models/onnx_model.h"
#include "limpq/models/quantized.h"
#include "limpq/search/compare.h"
#include "limpq/search/criterion.h"
#include "limpq/search/search.h"
#include "limpq/train/pipeline.h"
#include "limpq/train/sensitivity.h"
#include "limpq/train/trainer.h"
#include "limpq/util/atomic_file.h"
#include "limpq/util/options.h"
#include "limpq/util/progress.h"
#include "limpq/util/runtime.h"
#include "limpq/util/signals.h"

namespace {

using limpq::util::FlagSet;

// `limpq train` (full precision), `limpq finetune` (quantization-aware
// training under a policy) and `limpq indicators` (joint indicator training)
// share the trainer; each starts from its own recipe and adds its section.
enum class TrainKind { kTrain, kFinetune, kIndicators };

struct TrainCommand {
  limpq::train::TrainConfig config;
  FlagSet flags;
  std::string config_path;
  bool resume = false;
  bool json = false;
  TrainKind kind;
  bool finetune = false;

  explicit TrainCommand(TrainKind kind_) : kind(kind_), finetune(kind_ == TrainKind::kFinetune) {
    // The recipes `limpq run`'s stages use too (train/options.h).
    if (kind == TrainKind::kTrain) {
      config.optim = limpq::train::train_recipe();
    } else if (kind == TrainKind::kFinetune) {
      config.optim = limpq::train::finetune_recipe();
      config.run.out_dir("runs/finetune");
    } else if (kind == TrainKind::kIndicators) {
      config.optim = limpq::train::indicator_recipe();
      config.run.out_dir("runs/indicators");
      config.joint_indicators = true;
    }
  }

  // The config sections this command accepts.
  std::vector<limpq::util::ConfigSection> sections() {
    std::vector<limpq::util::ConfigSection> out;
    for (auto& s : config.sections()) {
      if (s.name == "quant" && kind != TrainKind::kFinetune) continue;
      if (s.name == "indicators" && kind != TrainKind::kIndicators) continue;
      out.push_back(std::move(s));
    }
    return out;
  }

  void add_to(CLI::App& app) {
    CLI::App* cmd = nullptr;
    switch (kind) {
      case TrainKind::kTrain: cmd = app.add_subcommand("train", "Train a full-precision network"); break;
      case TrainKind::kFinetune:
        cmd = app.add_subcommand("finetune",
                                 "Quantization-aware fine-tuning of a full-precision model under a policy "
                                 "(--policy FILE or --uniform W4A4)");
        break;
      case TrainKind::kIndicators:
        cmd = app.add_subcommand("indicators",
                                 "Jointly train the importance indicators of every layer and candidate bit-width "
                                 "from a full-precision model; writes <out-dir>/indicators.json");
        break;
    }
    std::string names;
    for (const auto& s : sections()) names += (names.empty() ? "" : ", ") + s.name;
    cmd->add_option("--config", config_path, "YAML config (sections " + names + "); flags override it")
        ->check(CLI::ExistingFile);
    cmd->add_flag("--resume", resume, "continue from <out-dir>/checkpoint.pt if it exists");
    cmd->add_flag("--json", json, "print the final result as one JSON line on stdout");
    flags.add(*cmd, config.data, "Data");
    flags.add(*cmd, config.model, "Model");
    flags.add(*cmd, config.optim, "Train");
    flags.add(*cmd, config.run, "Run");
    if (kind == TrainKind::kFinetune) flags.add(*cmd, config.quant, "Quantization");
    if (kind == TrainKind::kIndicators) flags.add(*cmd, config.indicators, "Indicators");
    cmd->callback([this] { run(); });
  }

  void run() {
    if (!config_path.empty()) limpq::util::load_config(config_path, sections());
    flags.apply();
    if (kind == TrainKind::kIndicators && config.model.weights().empty()) {
      fmt::print(stderr, "indicators: no --weights given; indicators are meant to be trained from a full-precision model\n");
    }
    if (finetune) {
      TORCH_CHECK(config.quant.enabled(), "finetune: give the policy to train under: --policy FILE or --uniform W4A4");
      if (config.model.weights().empty()) {
        fmt::print(stderr, "finetune: no --weights given; quantization-aware training starts from random weights\n");
      }
    }
    const auto result = limpq::train::run_train(config, resume);
    if (!limpq::dist::is_main()) return;  // data-parallel workers: rank 0 reports
    if (json) {
      std::cout << result.to_json().dump() << std::endl;
    } else {
      fmt::print("{}", result.to_text(config.indicators.only_layer()));
    }
  }
};

struct EvalCommand {
  limpq::data::DataOptions data;
  limpq::train::EvalOptions options;
  FlagSet flags, data_flags;
  std::string checkpoint, onnx;
  bool json = false;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("eval", "Evaluate a checkpoint, or an ONNX network's own weights: top-1, top-5 and loss");
    auto* from_checkpoint =
        cmd->add_option("--checkpoint", checkpoint, "checkpoint written by limpq")->check(CLI::ExistingFile);
    cmd->add_option("--onnx", onnx, "an ONNX classifier: its own weights, the data adapted to its input")
        ->check(CLI::ExistingFile)
        ->excludes(from_checkpoint);
    cmd->add_flag("--json", json, "print one JSON line on stdout");
    flags.add(*cmd, options, "Evaluation");
    // Data flags override the data options recorded in the checkpoint.
    data_flags.add(*cmd, data, "Data (default: as recorded in the checkpoint)");
    cmd->callback([this] { run(); });
  }

  void run() {
    TORCH_CHECK(!checkpoint.empty() || !onnx.empty(), "eval: give --checkpoint FILE or --onnx FILE");
    // A checkpoint, a packed model from limpq export, or an ONNX file.
    const auto ckpt = !onnx.empty()                               ? limpq::train::onnx_checkpoint(onnx)
                      : limpq::deploy::is_packed_file(checkpoint) ? limpq::deploy::read_packed(checkpoint)
                                                                  : limpq::train::load_checkpoint(checkpoint);
    if (!onnx.empty()) checkpoint = onnx;
    flags.apply();
    data = limpq::train::data_options_of(ckpt);
    data_flags.apply();
    const auto r = limpq::train::run_eval(ckpt, options, data);
    if (!limpq::dist::is_main()) return;
    if (options.bn_recalibration_batches() > 0 && !json) {
      fmt::print("batch-norm statistics re-estimated over {} training batches before evaluating\n",
                 options.bn_recalibration_batches());
    }
    if (json) {
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
  FlagSet flags;
  bool json = false;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("cost", "Per-layer MACs, parameters, BitOps and size of a model");
    flags.add(*cmd, model, "Model");
    flags.add(*cmd, options, "Cost");
    cmd->add_flag("--json", json, "print the table and totals as one JSON object");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    const auto table = limpq::models::cost_table(model, options);
    if (json) {
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
  FlagSet flags;
  std::string indicators_path;
  std::string out;  // empty: print, write nothing
  std::string constraint_csv;
  double constraint_budget = 0;
  bool json = false;
  std::optional<uint64_t> random_objective;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("search", "Search the mixed-precision policy for a budget from an indicators file");
    cmd->add_option("--indicators", indicators_path, "indicators.json from limpq indicators (or made elsewhere)")
        ->required()
        ->check(CLI::ExistingFile);
    cmd->add_option("--constraint", constraint_csv,
                    "extra constraint: CSV layer,weight_bits,act_bits,cost (a pair without a row is not available; "
                    "docs/usage.md)")
        ->check(CLI::ExistingFile);
    cmd->add_option("--constraint-budget", constraint_budget, "budget of --constraint (sum of costs)");
    cmd->add_option("--out", out,
                    "policy file to write (default: none, the policy is printed); with --sweep, the prefix of "
                    "<out>.csv and <out>.json");
    cmd->add_flag("--json", json, "print the summary as one JSON line");
    cmd->add_option("--random-objective", random_objective,
                    "replace the indicators by random values from this seed (decreasing in bits): a random policy "
                    "that meets the same budget, as a baseline");
    flags.add(*cmd, options, "Search");
    flags.add(*cmd, sweep, "Sweep");
    cmd->callback([this] { run(); });
  }

  void run_sweep(const limpq::quant::Indicators& indicators) {
    TORCH_CHECK(options.bitops().empty(),
                "search: --sweep replaces --bitops; set the range with --sweep-from/--sweep-to");
    const auto points = limpq::search::run_sweep(indicators, options, sweep);
    std::string prefix = out;
    if (prefix.size() > 5 && prefix.substr(prefix.size() - 5) == ".json") prefix.resize(prefix.size() - 5);
    if (!prefix.empty()) {
      limpq::util::write_file_atomic(prefix + ".csv", limpq::search::sweep_to_csv(points));
      limpq::util::write_file_atomic(prefix + ".json", limpq::search::sweep_to_json(points).dump(2) + "\n");
    }
    if (json) {
      std::cout << limpq::search::sweep_to_json(points).dump() << std::endl;
      return;
    }
    fmt::print("{}", limpq::search::sweep_text(points));
    if (!prefix.empty()) fmt::print("sweep written to {}.csv and {}.json\n", prefix, prefix);
  }

  void run() {
    flags.apply();
    if (!constraint_csv.empty()) {
      options.extra({limpq::search::read_constraint_csv(constraint_csv, constraint_budget)});
    }
    auto indicators = limpq::quant::read_indicators(indicators_path);
    if (random_objective) indicators = limpq::search::random_indicators(indicators, *random_objective);
    if (sweep.points() > 0) {
      run_sweep(indicators);
      return;
    }
    const auto r = limpq::search::run_search(indicators, options);
    if (!out.empty()) limpq::quant::write_policy(out, r.policy);
    if (json) {
      auto j = r.to_json();
      if (out.empty()) {
        j["policy"] = limpq::quant::policy_to_json(r.policy);
      } else {
        j["policy"] = out;
      }
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
  FlagSet flags;
  std::string path_a, path_b;
  bool json = false;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("compare-indicators",
                                   "Rank correlations (Spearman, Kendall) across layers between two indicators files, "
                                   "per bit-width, for weights, activations and I_a + alpha I_w");
    cmd->add_option("a", path_a, "first indicators file")->required()->check(CLI::ExistingFile);
    cmd->add_option("b", path_b, "second indicators file (e.g. from limpq sensitivity --method drop)")
        ->required()
        ->check(CLI::ExistingFile);
    cmd->add_flag("--json", json, "print the result as one JSON line");
    flags.add(*cmd, options, "Compare");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    const auto c = limpq::search::compare_indicator_files(path_a, path_b, options);
    if (json) {
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
  FlagSet flags;
  std::string out = "sensitivity.json";
  bool json = false;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "sensitivity",
        "Per-layer sensitivity of a full-precision model, written as an indicators file that limpq search and "
        "limpq compare-indicators read (searched with alpha 1): --method drop measures the loss increase with each "
        "tensor alone quantized (on --val-size held-out examples); --method hessian is HAWQ-V3's Hessian trace "
        "times the quantization error");
    cmd->add_option("--out", out, "indicators-format file to write")->default_str(out);
    cmd->add_flag("--json", json, "print the result as one JSON line");
    flags.add(*cmd, config, "Run");
    flags.add(*cmd, config.data, "Data");
    flags.add(*cmd, config.model, "Model");
    flags.add(*cmd, config.sensitivity, "Sensitivity");
    cmd->callback([this] { run(); });
  }

  void run() {
    flags.apply();
    limpq::util::Stopwatch clock;
    // The drop method keeps its measurements beside --out as it goes.
    config.partial_path = out + ".partial";
    const auto ind = limpq::train::run_sensitivity(config);
    if (!limpq::dist::is_main()) return;
    limpq::quant::write_indicators(out, ind);
    std::filesystem::remove(config.partial_path);
    if (json) {
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
  std::string config_path;
  std::string out_dir;
  bool json = false;

  void add_to(CLI::App& app) {
    auto* cmd = app.add_subcommand("run",
                                   "The whole pipeline: full-precision training (or given weights) -> indicators -> "
                                   "search -> fine-tuning -> evaluation, every stage cached and resumable");
    cmd->add_option("config", config_path,
                    "YAML config (sections data, model, train, run, indicators, search, finetune)")
        ->required()
        ->check(CLI::ExistingFile);
    cmd->add_option("--out-dir", out_dir, "override run.out_dir");
    cmd->add_flag("--json", json, "print the final table as one JSON line");
    cmd->callback([this] { run(); });
  }

  void run() {
    config = limpq::train::load_pipeline_config(config_path);
    if (!out_dir.empty()) config.run.out_dir(out_dir);
    const auto result = limpq::train::run_pipeline(config);
    const std::string report = limpq::deploy::write_run_report(config.run.out_dir());
    if (json) {
      nlohmann::ordered_json rows = nlohmann::ordered_json::array();
      for (const auto& row : result.rows) {
        auto j = row.test.to_json();
        j["name"] = row.name;
        j["train_seconds"] = row.train_seconds;
        rows.push_back(j);
      }
      std::cout << nlohmann::ordered_json{{"policy", result.policy}, {"report", report}, {"rows", rows}}.dump()
                << std::endl;
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
  int64_t nproc = 2;
  std::vector<std::string> command;
  int exit_status = 0;

  void add_to(CLI::App& app) {
    CLI::App* cmd = app.add_subcommand(
        "launch", "Start N local data-parallel workers of a limpq command (like torchrun --nproc-per-node N)");
    cmd->add_option("-n,--nproc", nproc, "number of workers")
        ->default_str(std::to_string(nproc))
        ->check(CLI::PositiveNumber);
    cmd->add_option("command", command, "the worker command after --, e.g. -- limpq train --config c.yaml")
        ->required();
    cmd->callback([this] { run(); });
  }

  void run() {
    limpq::dist::LaunchOptions options;
    options.workers = nproc;
    exit_status = limpq::dist::launch_local(command, options);
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"limpq: mixed-precision quantization from learned layer-wise importance"};
  app.require_subcommand(1);
  TrainCommand train(TrainKind::kTrain);
  TrainCommand finetune(TrainKind::kFinetune);
  TrainCommand indicators(TrainKind::kIndicators);
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
