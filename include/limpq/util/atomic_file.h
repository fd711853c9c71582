// Crash-safe file output.
//
// Every file limpq writes (checkpoints, metrics, configs, policies) goes
// through write_file_atomic: the bytes land in a temporary file beside the
// target, are fsync'ed, and the temporary is renamed over the target, so a
// reader sees either the old complete file or the new complete file, never a
// torn one. A failure (full disk, missing directory) throws and leaves the
// previous file untouched.
//
//   limpq::util::write_file_atomic("run/checkpoint.pt", bytes);
#pragma once

#include <string>
#include <string_view>

namespace limpq::util {

// Writes `bytes` to `path` atomically (temp file + fsync + rename + fsync of
// the directory). Creates missing parent directories.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Reads a whole file; throws with the path and the OS error when it cannot.
std::string read_file(const std::string& path);

// True when `path` names an existing regular file.
bool file_exists(const std::string& path);

// Creates `dir` and its parents; throws naming the directory on failure.
void make_directories(const std::string& dir);

}  // namespace limpq::util
