#include "progress.h"

#include <cstdio>

namespace moerun::tools {

namespace {
constexpr auto kQuiet = std::chrono::seconds(2);
constexpr auto kHeartbeat = std::chrono::seconds(5);
}  // namespace

Progress::Progress(std::string label) : label_(std::move(label)) {
  thread_ = std::thread([this] { heartbeat(); });
}

Progress::~Progress() { done(); }

void Progress::print(const std::string& what) {
  const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  std::fprintf(stderr, "%s: %s (%.0f s)\n", label_.c_str(), what.c_str(), seconds);
  std::fflush(stderr);
  printed_ = true;
  last_line_ = Clock::now();
}

void Progress::update(double fraction) {
  std::lock_guard<std::mutex> lock(mutex_);
  fraction_ = fraction;
  if (!printed_ || finished_) return;  // the heartbeat prints the first line after kQuiet
  const int tenths = static_cast<int>(fraction * 10.0 + 1e-9);
  if (tenths <= printed_tenths_ || tenths >= 10) return;
  printed_tenths_ = tenths;
  print(std::to_string(tenths * 10) + "%");
}

void Progress::heartbeat() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (wake_.wait_for(lock, kQuiet, [this] { return finished_; })) return;
  while (!finished_) {
    if (fraction_ >= 0.0) {
      printed_tenths_ = static_cast<int>(fraction_ * 10.0 + 1e-9);
      print(std::to_string(printed_tenths_ * 10) + "%");
    } else {
      print(printed_ ? "still running" : "running");
    }
    wake_.wait_until(lock, last_line_ + kHeartbeat, [this] { return finished_; });
  }
}

void Progress::done() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finished_) return;
    finished_ = true;
  }
  wake_.notify_all();
  thread_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  if (printed_) print("done");
}

}  // namespace moerun::tools
