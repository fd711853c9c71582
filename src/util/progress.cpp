#include "limpq/util/progress.h"

#include <fmt/core.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace limpq::util {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02d}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

ProgressLine::ProgressLine(std::string title, int64_t total, bool enabled)
    : title_(std::move(title)), total_(total), enabled_(enabled), tty_(::isatty(STDERR_FILENO) != 0) {}

void ProgressLine::update(int64_t done, const std::string& status) {
  if (!enabled_ || !tty_) return;
  const double now = clock_.seconds();
  if (now - last_draw_ < 0.25 && done < total_) return;
  last_draw_ = now;
  const double eta = done > 0 ? now / done * (total_ - done) : 0.0;
  fmt::print(stderr, "\r\033[K{} [{}/{}] {} | ETA {}", title_, done, total_, status, format_duration(eta));
  std::fflush(stderr);
}

void ProgressLine::finish(const std::string& status) {
  if (enabled_ && tty_) fmt::print(stderr, "\r\033[K");
  fmt::print(stderr, "{} {} | {}\n", title_, status, format_duration(clock_.seconds()));
  std::fflush(stderr);
}

}  // namespace limpq::util
