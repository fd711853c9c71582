// Graceful stop on SIGINT / SIGTERM.
//
// While a StopOnSignal is alive, the first SIGINT or SIGTERM only sets a
// flag: the training loop sees stop_requested() after the current step,
// writes a checkpoint and throws Interrupted, which the CLI turns into a
// message saying how to resume and a non-zero exit. A second signal exits
// at once (status 128 + signal); files are written atomically, so nothing
// already written is damaged.
//
//   util::StopOnSignal guard;      // in main(), around the command
//   ... if (util::stop_requested()) { save(); throw util::Interrupted(...); }
#pragma once

#include <stdexcept>
#include <string>

namespace limpq::util {

class StopOnSignal {
 public:
  StopOnSignal();   // installs the SIGINT and SIGTERM handlers
  ~StopOnSignal();  // restores the previous ones
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;
};

// True once a stop was requested (by a signal or request_stop()).
bool stop_requested();
// The signal that asked for the stop (0 for request_stop()).
int stop_signal();
// Asks for a stop as if a signal had arrived (tests, embedding code).
void request_stop(int signal = 0);
// Forgets a stop request.
void clear_stop();

// Thrown by a loop that stopped on request after saving its state.
class Interrupted : public std::runtime_error {
 public:
  Interrupted(const std::string& message, int signal) : std::runtime_error(message), signal_(signal) {}
  // The conventional exit status: 128 + signal (130 for SIGINT).
  int exit_status() const { return 128 + (signal_ > 0 ? signal_ : 2); }

 private:
  int signal_;
};

}  // namespace limpq::util
