#pragma once
// The command-line front end's own options: what each command adds around
// the library's options structs (files to read and write, --json), declared
// once and composed by the commands that use them. Flags come from these
// structs through util::FlagSet, positional arguments through
// add_positionals, so `limpq <command> --help` shows each field with its
// default.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "limpq/util/options.h"

namespace limpq::cli {

// --json: every command that reports a result.
struct JsonOutput {
  bool json = false;
  template <typename V>
  void visit(V&& v) {
    v("json", json, "print the result as JSON on stdout (one line)");
  }
};

// train, finetune, indicators: a YAML config under the flags, and resuming.
struct TrainInput {
  std::string config;
  bool resume = false;
  template <typename V>
  void visit(V&& v) {
    v("config", config, "YAML config file (the command's sections); flags given override it");
    v("resume", resume, "continue from <out-dir>/checkpoint.pt if it exists");
  }
};

// eval: what to evaluate (or --onnx, from the model options).
struct EvalInput {
  std::string checkpoint;
  template <typename V>
  void visit(V&& v) {
    v("checkpoint", checkpoint, "checkpoint or packed model written by limpq (or --onnx FILE: its own weights)");
  }
};

// search: the indicators in, the policy out, an extra constraint, and the
// random baseline.
struct SearchFiles {
  std::string indicators;
  std::string out;  // empty: print, write nothing
  std::string constraint;
  double constraint_budget = 0;
  std::optional<int64_t> random_objective;
  template <typename V>
  void visit(V&& v) {
    v("indicators", indicators, "indicators.json from limpq indicators (or made elsewhere); required");
    v("out", out,
      "policy file to write (default: none, the policy is printed); with --sweep, the prefix of <out>.csv and "
      "<out>.json");
    v("constraint", constraint,
      "extra constraint: CSV layer,weight_bits,act_bits,cost (a pair without a row is not available; "
      "docs/usage.md)");
    v("constraint_budget", constraint_budget, "budget of --constraint (sum of costs)");
    v("random_objective", random_objective,
      "replace the indicators by random values from this seed (decreasing in bits): a random policy that meets "
      "the same budget, as a baseline");
  }
};

// sensitivity: where the indicators-format result goes.
struct SensitivityOutput {
  std::string out = "sensitivity.json";
  template <typename V>
  void visit(V&& v) {
    v("out", out, "indicators-format file to write");
  }
};

// Positional arguments.
struct RunArgs {
  std::string config;
  template <typename V>
  void visit(V&& v) {
    v("config", config, "YAML config (sections data, model, train, run, indicators, search, finetune)");
  }
};

struct CompareArgs {
  std::string a, b;
  template <typename V>
  void visit(V&& v) {
    v("a", a, "first indicators file");
    v("b", b, "second indicators file (e.g. from limpq sensitivity --method drop)");
  }
};

struct LaunchArgs {
  std::vector<std::string> command;
  template <typename V>
  void visit(V&& v) {
    v("command", command, "the worker command after --, e.g. -- limpq train --config c.yaml");
  }
};

// Every field of `opts` as a required positional argument, in order.
template <typename Options>
void add_positionals(CLI::App& app, Options& opts) {
  opts.visit([&](const char* name, auto& field, const char* help) { app.add_option(name, field, help)->required(); });
}

// Forwards a visit to `v` for the fields named only: a command that takes
// one option of a library struct (eval's --onnx of the model options).
template <typename V>
auto only(std::vector<std::string> names, V& v) {
  return [names = std::move(names), &v](const char* name, auto& field, const char* help) {
    for (const auto& n : names) {
      if (n == name) v(name, field, help);
    }
  };
}

// An options struct seen through `only`, to give FlagSet::add.
template <typename Options>
struct Only {
  Options& options;
  std::vector<std::string> names;
  template <typename V>
  void visit(V&& v) {
    options.visit(only(names, v));
  }
};

}  // namespace limpq::cli
