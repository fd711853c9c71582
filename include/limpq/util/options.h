// One source of truth for configuration.
//
// Every options struct declares its fields once, in a `visit` member, with a
// name and a help text. The YAML config loader, the command-line flags and the
// JSON dump written into checkpoints are all driven by that one list, so a
// field cannot exist in one place and be missing in another, and an unknown
// key or flag is always an error that names it.
//
//   struct OptimOptions {
//     TORCH_ARG(int64_t, epochs) = 15;
//    public:
//     template <typename V> void visit(V&& v) { v("epochs", epochs_, "training epochs"); }
//   };
//
//   OptimOptions optim;
//   limpq::util::FlagSet flags;
//   flags.add(app, optim);                      // --epochs
//   ... app.parse(argc, argv) ...
//   limpq::util::load_config(path, {limpq::util::section("train", optim)});
//   flags.apply();                              // flags override the file
#pragma once

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace limpq::util {

// --- value conversion -------------------------------------------------------
// `where` names the value for error messages, e.g. "configs/a.yaml: train.epochs".
void parse_value(const YAML::Node& node, int64_t& out, const std::string& where);
void parse_value(const YAML::Node& node, double& out, const std::string& where);
void parse_value(const YAML::Node& node, bool& out, const std::string& where);
void parse_value(const YAML::Node& node, std::string& out, const std::string& where);
void parse_value(const YAML::Node& node, std::vector<int64_t>& out, const std::string& where);
void parse_value(const YAML::Node& node, std::vector<double>& out, const std::string& where);
void parse_value(const YAML::Node& node, std::vector<std::string>& out, const std::string& where);
// Optional fields: null, ~ or an empty value leave them unset.
void parse_value(const YAML::Node& node, std::optional<double>& out, const std::string& where);
void parse_value(const YAML::Node& node, std::optional<int64_t>& out, const std::string& where);

std::string format_value(int64_t v);
std::string format_value(double v);
std::string format_value(bool v);
std::string format_value(const std::string& v);
std::string format_value(const std::vector<int64_t>& v);
std::string format_value(const std::vector<double>& v);
std::string format_value(const std::vector<std::string>& v);
std::string format_value(const std::optional<double>& v);  // "" when unset
std::string format_value(const std::optional<int64_t>& v);

// The value's type as --help shows it: INT, FLOAT, BOOL, TEXT, INT,...
const char* type_name(const int64_t&);
const char* type_name(const double&);
const char* type_name(const bool&);
const char* type_name(const std::string&);
const char* type_name(const std::vector<int64_t>&);
const char* type_name(const std::vector<double>&);
const char* type_name(const std::vector<std::string>&);
const char* type_name(const std::optional<double>&);
const char* type_name(const std::optional<int64_t>&);

// A field as JSON: its value, or null for an unset optional.
template <typename T>
nlohmann::ordered_json json_value(const T& v) {
  return v;
}
template <typename T>
nlohmann::ordered_json json_value(const std::optional<T>& v) {
  return v ? nlohmann::ordered_json(*v) : nlohmann::ordered_json();
}

// "eval_batch_size" -> "eval-batch-size"
std::string flag_name(const std::string& field);

// --- options structs --------------------------------------------------------

// Fills `opts` from a YAML mapping; an unknown key is an error naming it and
// listing the known ones.
template <typename Options>
void from_yaml(const YAML::Node& mapping, Options& opts, const std::string& where) {
  if (!mapping || mapping.IsNull()) return;
  if (!mapping.IsMap()) {
    TORCH_CHECK(false, where + ": expected a mapping of option: value");
  }
  for (const auto& kv : mapping) {
    const std::string key = kv.first.as<std::string>();
    bool found = false;
    std::string known;
    opts.visit([&](const char* name, auto& field, const char* /*help*/) {
      known += known.empty() ? name : std::string(", ") + name;
      if (key == name) {
        parse_value(kv.second, field, where + "." + key);
        found = true;
      }
    });
    if (!found) {
      TORCH_CHECK(false, where + ": unknown key '" + key + "' (known keys: " + known + ")");
    }
  }
}

template <typename Options>
nlohmann::ordered_json to_json(Options& opts) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  opts.visit([&](const char* name, auto& field, const char* /*help*/) { j[name] = json_value(field); });
  return j;
}

// Forwards a visit to `v` except for the fields named: a struct that embeds
// another and fixes some of its fields elsewhere declares the rest.
//   search.visit(except({"fixed_bits"}, v));
template <typename V>
auto except(std::initializer_list<const char*> names, V& v) {
  return [names = std::vector<std::string>(names.begin(), names.end()), &v](const char* name, auto& field,
                                                                             const char* help) {
    for (const auto& n : names) {
      if (n == name) return;
    }
    v(name, field, help);
  };
}

// A named section of a config file bound to one options struct.
struct ConfigSection {
  std::string name;
  std::function<void(const YAML::Node&, const std::string&)> load;
};

template <typename Options>
ConfigSection section(std::string name, Options& opts) {
  return {std::move(name), [&opts](const YAML::Node& node, const std::string& where) {
            from_yaml(node, opts, where);
          }};
}

// Loads a YAML file whose top level is a mapping of section name -> options.
// Unknown sections are an error naming the file and the section.
// Returns how many sections the file has (0 for an empty file).
int64_t load_config(const std::string& path, const std::vector<ConfigSection>& sections);

template <typename T>
struct is_list : std::false_type {};
template <typename T>
struct is_list<std::vector<T>> : std::true_type {};

// Command-line flags for the fields of options structs. CLI11 checks each
// value against its field's type while it parses (`--epochs abc` is rejected
// before anything loads, and --help shows INT, FLOAT, BOOL); the value is
// written into the field by the same parse_value as the YAML loader when
// apply() runs, which lets a config file be loaded in between: flags given on
// the command line override the file.
class FlagSet {
 public:
  template <typename Options>
  void add(CLI::App& app, Options& opts, const std::string& group = "Options") {
    opts.visit([&](const char* name, auto& field, const char* help) {
      using Field = std::decay_t<decltype(field)>;
      Flag& flag = flags_.emplace_back();
      flag.name = flag_name(name);
      const std::string where = "--" + flag.name;
      // --help shows "--name TYPE=default". A scalar given twice takes its
      // last value, as in most command-line tools; a list takes every value
      // given (--candidates 6 5 4 or --candidates 6,5,4).
      const std::string shown = format_value(field);
      // A scalar is bound to one string: CLI11 lets an option bound to a
      // list swallow the `--` before a command's positional arguments
      // (`limpq launch --nproc 2 -- limpq train ...`).
      if constexpr (is_list<Field>::value) {
        flag.option = app.add_option(where, flag.values, help)
                          ->expected(1, CLI::detail::expected_max_vector_size)
                          ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
      } else {
        flag.option = app.add_option(where, flag.value, help)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      }
      flag.option->option_text(std::string(type_name(field)) + (shown.empty() ? "" : "=" + shown))
          ->check(CLI::Validator([](std::string& text) { return parse_error<Field>(text); }, ""))
          ->group(group);
      // A boolean flag alone means true (--keep-nonmonotone); a value sets it
      // (--augment false).
      if constexpr (std::is_same_v<Field, bool>) flag.option->expected(0, 1);
      flag.assign = [&field, &flag, where] {
        std::string text = flag.value;
        if constexpr (is_list<Field>::value) {
          for (const auto& v : flag.values) text += (text.empty() ? "" : " ") + v;
        }
        parse_value(YAML::Load(std::is_same_v<Field, bool> && text.empty() ? "true" : text), field, where);
      };
    });
  }

  // Writes every flag given on the command line into its field.
  void apply() const;

 private:
  // The error parse_value gives `text` as a `Field` ("value must be an
  // integer, got 'abc'"; CLI11 names the flag), or "" when it parses.
  template <typename Field>
  static std::string parse_error(const std::string& text) {
    if (std::is_same_v<Field, bool> && text.empty()) return "";  // a boolean flag alone
    try {
      Field value;
      parse_value(YAML::Load(text), value, "value");
      return "";
    } catch (const c10::Error& e) {
      return e.what_without_backtrace();
    } catch (const YAML::Exception& e) {
      return std::string("not valid YAML: ") + e.what();
    }
  }

  struct Flag {
    std::string name;
    std::string value;                // a scalar as given on the command line (the last one)
    std::vector<std::string> values;  // a list as given
    CLI::Option* option = nullptr;
    std::function<void()> assign;
  };
  std::deque<Flag> flags_;
};

}  // namespace limpq::util
