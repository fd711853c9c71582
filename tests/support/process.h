// Running the limpq binary from tests (crash and data-parallel tests).
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

namespace limpq::testing {

// The limpq binary: $LIMPQ_CLI, else `fallback` (the one this build made).
std::string limpq_cli(const std::string& fallback);

// Starts `binary` with `args` and extra environment variables; its stderr
// goes to `log`, its stdout to /dev/null. Returns the pid.
pid_t spawn(const std::string& binary, const std::vector<std::string>& args, const std::string& log,
            const std::vector<std::pair<std::string, std::string>>& env = {});

// Waits for `pid` up to `seconds`; returns its wait status, or -1 if it is
// still running.
int wait_for(pid_t pid, double seconds);

// True for a wait status of a clean exit 0.
bool exited_cleanly(int status);

}  // namespace limpq::testing
