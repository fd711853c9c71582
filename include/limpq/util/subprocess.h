// Running a helper program and collecting its output.
//
//   util::ProcessResult r = util::run_process({"node", "tools/ort/run_onnx.js", ...});
//   if (r.exit_code != 0) ... r.output ...
#pragma once

#include <string>
#include <vector>

namespace limpq::util {

struct ProcessResult {
  int exit_code = -1;  // 128 + signal when killed by one; 127 when it could not start
  std::string output;  // stdout and stderr together
};

// Runs argv[0] (looked up in PATH) with the arguments and waits for it.
ProcessResult run_process(const std::vector<std::string>& argv);

// The absolute path of the running executable ("" when unknown).
std::string executable_path();

}  // namespace limpq::util
