// The SM clock while a benchmark runs: a thread samples NVML's current SM clock every millisecond
// between start() and stop(). NVML comes from the driver (libnvidia-ml.so.1) at run time, so the
// build needs no NVML headers or stubs; without it the clock is reported as unknown, with why.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace moerun::tools {

class SmClockSampler {
 public:
  // `device`: the CUDA device whose clock to read (matched to NVML by PCI bus id).
  explicit SmClockSampler(int device);
  ~SmClockSampler();
  SmClockSampler(const SmClockSampler&) = delete;
  SmClockSampler& operator=(const SmClockSampler&) = delete;

  void start();
  // Median of the samples since start() in MHz, or 0 when none could be taken (see reason()).
  double stop();
  // Why the clock cannot be read ("" when it can).
  const std::string& reason() const { return reason_; }

 private:
  void* handle_ = nullptr;  // nvmlDevice_t
  unsigned (*clock_info_)(void*, int, unsigned*) = nullptr;
  std::string reason_;
  std::atomic<bool> running_{false};
  std::thread thread_;
  std::vector<unsigned> samples_;
};

}  // namespace moerun::tools
