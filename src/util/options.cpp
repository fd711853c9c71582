#include "limpq/util/options.h"

#include <sstream>

namespace limpq::util {
namespace {

[[noreturn]] void bad_value(const YAML::Node& node, const std::string& where, const char* expected) {
  std::string got;
  if (node.IsScalar()) {
    got = "'" + node.Scalar() + "'";
  } else if (node.IsSequence()) {
    got = "a list";
  } else if (node.IsMap()) {
    got = "a mapping";
  } else {
    got = "nothing";
  }
  TORCH_CHECK(false, where + " must be " + expected + ", got " + got);
}

template <typename T>
T scalar_as(const YAML::Node& node, const std::string& where, const char* expected) {
  if (!node.IsScalar()) bad_value(node, where, expected);
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    bad_value(node, where, expected);
  }
}

template <typename T>
void parse_list(const YAML::Node& node, std::vector<T>& out, const std::string& where,
                const char* expected) {
  std::vector<T> values;
  if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      values.push_back(scalar_as<T>(node[i], where + "[" + std::to_string(i) + "]", expected));
    }
  } else if (node.IsScalar()) {
    // "6,5,4" or "6 5 4" from the command line.
    std::string text = node.Scalar();
    for (char& c : text) {
      if (c == ',') c = ' ';
    }
    std::istringstream ss(text);
    std::string item;
    while (ss >> item) {
      values.push_back(scalar_as<T>(YAML::Node(item), where, expected));
    }
  } else {
    bad_value(node, where, "a list");
  }
  out = std::move(values);
}

template <typename T>
std::string join(const std::vector<T>& v) {
  std::ostringstream ss;
  for (size_t i = 0; i < v.size(); ++i) ss << (i ? "," : "") << v[i];
  return ss.str();
}

}  // namespace

void parse_value(const YAML::Node& node, int64_t& out, const std::string& where) {
  out = scalar_as<int64_t>(node, where, "an integer");
}
void parse_value(const YAML::Node& node, double& out, const std::string& where) {
  out = scalar_as<double>(node, where, "a number");
}
void parse_value(const YAML::Node& node, bool& out, const std::string& where) {
  out = scalar_as<bool>(node, where, "true or false");
}
void parse_value(const YAML::Node& node, std::string& out, const std::string& where) {
  if (node.IsNull()) {
    out.clear();
    return;
  }
  out = scalar_as<std::string>(node, where, "a string");
}
void parse_value(const YAML::Node& node, std::vector<int64_t>& out, const std::string& where) {
  parse_list(node, out, where, "a list of integers");
}
void parse_value(const YAML::Node& node, std::vector<double>& out, const std::string& where) {
  parse_list(node, out, where, "a list of numbers");
}

void parse_value(const YAML::Node& node, std::vector<std::string>& out, const std::string& where) {
  parse_list(node, out, where, "a list of strings");
}

template <typename T>
void parse_optional(const YAML::Node& node, std::optional<T>& out, const std::string& where) {
  if (node.IsNull() || (node.IsScalar() && node.Scalar().empty())) {
    out.reset();
    return;
  }
  T value;
  parse_value(node, value, where);
  out = value;
}

void parse_value(const YAML::Node& node, std::optional<double>& out, const std::string& where) {
  parse_optional(node, out, where);
}
void parse_value(const YAML::Node& node, std::optional<int64_t>& out, const std::string& where) {
  parse_optional(node, out, where);
}

std::string format_value(int64_t v) { return std::to_string(v); }
std::string format_value(double v) {
  std::ostringstream ss;
  ss << v;
  return ss.str();
}
std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(const std::string& v) { return v; }
std::string format_value(const std::vector<int64_t>& v) { return join(v); }
std::string format_value(const std::vector<double>& v) { return join(v); }
std::string format_value(const std::vector<std::string>& v) { return join(v); }
std::string format_value(const std::optional<double>& v) { return v ? format_value(*v) : ""; }
std::string format_value(const std::optional<int64_t>& v) { return v ? format_value(*v) : ""; }

const char* type_name(const int64_t&) { return "INT"; }
const char* type_name(const double&) { return "FLOAT"; }
const char* type_name(const bool&) { return "BOOL"; }
const char* type_name(const std::string&) { return "TEXT"; }
const char* type_name(const std::vector<int64_t>&) { return "INT,..."; }
const char* type_name(const std::vector<double>&) { return "FLOAT,..."; }
const char* type_name(const std::vector<std::string>&) { return "TEXT,..."; }
const char* type_name(const std::optional<double>&) { return "FLOAT"; }
const char* type_name(const std::optional<int64_t>&) { return "INT"; }

std::string flag_name(const std::string& field) {
  std::string name = field;
  for (char& c : name) {
    if (c == '_') c = '-';
  }
  return name;
}

int64_t load_config(const std::string& path, const std::vector<ConfigSection>& sections) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    TORCH_CHECK(false, "config '" + path + "': cannot open file");
  } catch (const YAML::Exception& e) {
    TORCH_CHECK(false, "config '" + path + "': not valid YAML: " + e.what());
  }
  if (root.IsNull()) return 0;
  if (!root.IsMap()) {
    TORCH_CHECK(false, "config '" + path + "': the top level must be a mapping of sections");
  }
  int64_t loaded = 0;
  for (const auto& kv : root) {
    const std::string name = kv.first.as<std::string>();
    const ConfigSection* match = nullptr;
    std::string known;
    for (const auto& s : sections) {
      known += known.empty() ? s.name : ", " + s.name;
      if (s.name == name) match = &s;
    }
    if (match == nullptr) {
      TORCH_CHECK(false, "config '", path, "': unknown section '", name, "' (known sections: ", known,
                  ")");
    }
    match->load(kv.second, "config '" + path + "': " + name);
    ++loaded;
  }
  return loaded;
}

void FlagSet::apply() const {
  for (const auto& flag : flags_) {
    if (flag.option->count() > 0) flag.assign();
  }
}

}  // namespace limpq::util
