// Progress lines for long steps (load, weight generation, forward, reference), on stderr so that
// --json output stays clean.
//
// A step that ends within two seconds prints nothing. A longer one prints a line once it has run
// two seconds, then at every further 10% when the step reports fractions and every five seconds
// either way (so a step that cannot count still shows it is alive), and a last line with its time
// when it ends.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace moerun::tools {

class Progress {
 public:
  explicit Progress(std::string label);
  // Ends the step (as done() does) if it was not ended.
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // The fraction of the step done, in [0, 1]; callable from any thread.
  void update(double fraction);
  // Ends the step: stops the heartbeat and, when any line was printed, prints the time taken.
  void done();

 private:
  using Clock = std::chrono::steady_clock;
  void heartbeat();
  // Prints "label: <what>" with the elapsed time; the caller holds mutex_.
  void print(const std::string& what);

  std::string label_;
  Clock::time_point start_ = Clock::now();
  std::mutex mutex_;
  std::condition_variable wake_;
  bool finished_ = false;
  bool printed_ = false;
  double fraction_ = -1.0;  // < 0: not reported
  int printed_tenths_ = 0;
  Clock::time_point last_line_{};
  std::thread thread_;
};

}  // namespace moerun::tools
