// Local data-parallel workers without Python: what `limpq launch -n N --
// limpq train ...` runs (like torchrun --nproc-per-node N).
//
//   int status = dist::launch_local({"limpq", "train", "--config", "c.yaml"}, 2);
//
// Each worker gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE and
// LIMPQ_RENDEZVOUS_FILE, a FileStore in a private directory (mode 0700,
// removed at the end): the workers meet without any network port. A worker
// that fails stops the others (SIGTERM, then SIGKILL after a grace period);
// a stop request (Ctrl-C under util::StopOnSignal) is forwarded to every
// worker so that each checkpoints.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace limpq::dist {

struct LaunchOptions {
  int64_t workers = 2;
  template <typename V>
  void visit(V&& v) {
    v("nproc", workers, "number of local workers");
  }
  // How long workers may take to stop after another one failed, before
  // they are killed.
  std::chrono::milliseconds grace{30000};
};

// Runs `command` (argv; "limpq" means this very binary) as `options.workers`
// local workers and waits for all of them. Returns 0 when every worker
// succeeded, else the first failure's exit status (128 + signal when a
// signal ended it).
int launch_local(const std::vector<std::string>& command, const LaunchOptions& options);

}  // namespace limpq::dist
