// Shared by the libFuzzer targets: every parser of outside input is driven
// through its real entry point (most take a path), with the input written to
// a per-process file on tmpfs. A parser may reject any input with an
// exception naming the problem; crashes, sanitizer reports and exceptions of
// other types are findings.
#pragma once

#include <c10/util/Exception.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>

namespace limpq::fuzz {

// A file holding `data`, rewritten for each input.
inline const std::string& input_file(const uint8_t* data, size_t size, const char* suffix = "") {
  static const std::string path = [&] {
    const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/limpq_fuzz_" + std::to_string(::getpid()) + suffix;
  }();
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), size);
  return path;
}

// Runs `parse`, accepting a clean rejection (c10::Error or a standard
// exception with a message).
inline void expect_clean(const std::function<void()>& parse) {
  try {
    parse();
  } catch (const c10::Error& e) {
    if (std::string(e.what_without_backtrace()).empty()) __builtin_trap();  // a rejection must say why
  } catch (const std::exception& e) {
    if (std::string(e.what()).empty()) __builtin_trap();
  }
}

}  // namespace limpq::fuzz
