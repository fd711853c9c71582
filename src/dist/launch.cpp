#include "limpq/dist/launch.h"

#include <c10/util/Exception.h>
#include <fmt/core.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <thread>

#include "limpq/util/signals.h"

namespace limpq::dist {
namespace {

// A private directory (mode 0700) for the workers' FileStore, removed
// however the launch ends (workers leave through exec or _exit and never
// run the destructor).
class RendezvousDirectory {
 public:
  RendezvousDirectory() {
    std::string pattern = (std::filesystem::temp_directory_path() / "limpq-launch-XXXXXX").string();
    TORCH_CHECK(::mkdtemp(pattern.data()) != nullptr, "launch: cannot create a private directory under ",
                std::filesystem::temp_directory_path().string(), ": ", std::strerror(errno));
    path_ = pattern;
  }
  ~RendezvousDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  RendezvousDirectory(const RendezvousDirectory&) = delete;
  RendezvousDirectory& operator=(const RendezvousDirectory&) = delete;
  std::string store() const { return path_ + "/store"; }

 private:
  std::string path_;
};

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "unknown status";
}

int exit_status_of(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

// In the child: the rendezvous variables, then exec.
[[noreturn]] void exec_worker(const std::vector<std::string>& argv_strings, int64_t rank, int64_t workers,
                              const std::string& store) {
  ::setenv("RANK", std::to_string(rank).c_str(), 1);
  ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
  ::setenv("WORLD_SIZE", std::to_string(workers).c_str(), 1);
  ::setenv("LOCAL_WORLD_SIZE", std::to_string(workers).c_str(), 1);
  ::setenv("LIMPQ_RENDEZVOUS_FILE", store.c_str(), 1);
  std::vector<char*> argv;
  for (const auto& a : argv_strings) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  std::fprintf(stderr, "limpq launch: cannot run '%s': %s\n", argv[0], std::strerror(errno));
  ::_exit(127);
}

// The running workers and what the launcher does to them.
class Workers {
 public:
  Workers(const std::vector<std::string>& argv, int64_t count, const std::string& store) {
    for (int64_t r = 0; r < count; ++r) {
      const pid_t pid = ::fork();
      TORCH_CHECK(pid >= 0, "launch: fork failed: ", std::strerror(errno));
      if (pid == 0) exec_worker(argv, r, count, store);
      pids_.push_back(pid);
    }
    running_.assign(pids_.size(), true);
    alive_ = pids_.size();
  }

  size_t alive() const { return alive_; }

  // Reaps one ended worker without blocking; its rank, or -1 for none.
  int64_t reap(int& status) {
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return -1;
    const auto it = std::find(pids_.begin(), pids_.end(), pid);
    if (it == pids_.end()) return -1;
    const auto rank = static_cast<size_t>(it - pids_.begin());
    running_[rank] = false;
    --alive_;
    return static_cast<int64_t>(rank);
  }

  void signal_all(int signal) const {
    for (size_t r = 0; r < pids_.size(); ++r) {
      if (running_[r]) ::kill(pids_[r], signal);
    }
  }

 private:
  std::vector<pid_t> pids_;
  std::vector<bool> running_;
  size_t alive_ = 0;
};

}  // namespace

int launch_local(const std::vector<std::string>& command, const LaunchOptions& options) {
  TORCH_CHECK(!command.empty(), "launch: no worker command given");
  TORCH_CHECK(options.workers > 0, "launch: the number of workers must be positive, got ", options.workers);
  const RendezvousDirectory rendezvous;
  std::vector<std::string> argv = command;
  // "limpq" means this very binary, wherever it is installed.
  if (argv[0] == "limpq") argv[0] = std::filesystem::read_symlink("/proc/self/exe").string();
  Workers workers(argv, options.workers, rendezvous.store());
  fmt::print(stderr, "launch: {} workers (rendezvous through {}, no network port)\n", options.workers,
             rendezvous.store());
  int exit_status = 0;
  bool forwarded = false;
  bool killing = false;  // after a failure: SIGKILL whoever is left at kill_deadline
  auto kill_deadline = std::chrono::steady_clock::now();
  while (workers.alive() > 0) {
    int status = 0;
    const int64_t rank = workers.reap(status);
    if (rank >= 0) {
      const bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      if (failed && exit_status == 0) {
        exit_status = exit_status_of(status);
        if (workers.alive() > 0) {
          fmt::print(stderr, "launch: worker rank {} ended with {}; stopping the other workers\n", rank,
                     describe(status));
          workers.signal_all(SIGTERM);
          killing = true;
          kill_deadline = std::chrono::steady_clock::now() + options.grace;
        }
      }
      continue;
    }
    if (util::stop_requested() && !forwarded) {
      forwarded = true;  // each worker checkpoints and exits
      workers.signal_all(util::stop_signal() > 0 ? util::stop_signal() : SIGINT);
    }
    if (killing && std::chrono::steady_clock::now() > kill_deadline) {
      workers.signal_all(SIGKILL);
      killing = false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_status;
}

}  // namespace limpq::dist
