#include "limpq/util/signals.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>

namespace limpq::util {
namespace {

std::atomic<int> g_stop_signal{-1};  // -1: no request
struct sigaction g_previous_int, g_previous_term;

extern "C" void on_signal(int sig) {
  int expected = -1;
  if (g_stop_signal.compare_exchange_strong(expected, sig)) {
    static const char kMessage[] =
        "\nlimpq: stopping at the next safe point, keeping what can be resumed (again to exit at once)\n";
    [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
    return;
  }
  static const char kNow[] = "\nlimpq: exiting now\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, kNow, sizeof(kNow) - 1);
  ::_exit(128 + sig);
}

}  // namespace

StopOnSignal::StopOnSignal() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, &g_previous_int);
  sigaction(SIGTERM, &action, &g_previous_term);
}

StopOnSignal::~StopOnSignal() {
  sigaction(SIGINT, &g_previous_int, nullptr);
  sigaction(SIGTERM, &g_previous_term, nullptr);
}

bool stop_requested() { return g_stop_signal.load(std::memory_order_relaxed) >= 0; }
int stop_signal() { return std::max(0, g_stop_signal.load()); }
void request_stop(int signal) { g_stop_signal.store(signal); }
void clear_stop() { g_stop_signal.store(-1); }

}  // namespace limpq::util
