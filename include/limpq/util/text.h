#pragma once
// Small text helpers shared by the parsers and the error paths.

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

namespace limpq::util {

// `text` up to its first newline.
std::string first_line(std::string_view text);

// The first line of an exception's message, without the backtrace LibTorch
// appends to a c10::Error.
std::string error_message(const std::exception& e);

// The whole of `text` as a base-10 integer, or nullopt (empty, trailing
// characters, out of range).
std::optional<int64_t> parse_int(std::string_view text);

// The whole of `text` as a finite number, or nullopt.
std::optional<double> parse_double(std::string_view text);

}  // namespace limpq::util
