// Progress reporting for long loops: a live status line on a terminal, one
// line per finished unit of work otherwise.
//
//   ProgressLine progress("epoch 3/15", loader.batches_per_epoch());
//   for (...) { ...; progress.update(batch, fmt::format("loss {:.3f}", loss)); }
//   progress.finish("loss 0.412 acc 88.2%");
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace limpq::util {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  void reset() { start_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

// "1h02m", "3m07s", "12s".
std::string format_duration(double seconds);

class ProgressLine {
 public:
  // `live` enables the redrawn status line (on a terminal only).
  ProgressLine(std::string title, int64_t total, bool live = true);
  // Redraws the live line (at most a few times a second) on a terminal.
  void update(int64_t done, const std::string& status);
  // Ends the line with the final status; always printed.
  void finish(const std::string& status);
  double seconds() const { return clock_.seconds(); }

 private:
  std::string title_;
  int64_t total_;
  bool enabled_;
  bool tty_;
  Stopwatch clock_;
  double last_draw_ = -1.0;
};

}  // namespace limpq::util
