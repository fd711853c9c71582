#include "limpq/util/text.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace limpq::util {

std::string first_line(std::string_view text) { return std::string(text.substr(0, text.find('\n'))); }

std::string error_message(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  return first_line(c10_error ? c10_error->what_without_backtrace() : e.what());
}

std::optional<int64_t> parse_int(std::string_view text) {
  const std::string s(text);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(s.c_str(), &end, 10);
  if (errno == ERANGE || end != s.c_str() + s.size()) return std::nullopt;
  return static_cast<int64_t>(value);
}

std::optional<double> parse_double(std::string_view text) {
  const std::string s(text);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double value = std::strtod(s.c_str(), &end);
  if (errno == ERANGE || end != s.c_str() + s.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

}  // namespace limpq::util
