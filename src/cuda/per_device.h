// Values a kernel family computes once per device (its shared-memory opt-in, occupancy, SM count)
// and caches for later launches. Per device, not per process: cudaFuncSetAttribute applies to
// the current device only, so one cache for all would leave a second GPU of the process without
// the opt-in. Reading a cached value is a lock-free check; the first computation on a device is
// not a stream operation and runs outside any capture that later launches are part of.
#pragma once

#include <array>
#include <mutex>
#include <string>

#include "cuda/runtime.h"
#include "moerun/errors.h"

namespace moerun::cuda {

// Devices a process may use with moerun (a CUDA device ordinal is below this).
inline constexpr int kMaxDevices = 64;

template <class T>
class PerDevice {
 public:
  // The value for the current device: compute(device) on its first use there (again after a
  // throw), cached after that.
  template <class Compute>
  T get(Compute&& compute) {
    const int device = current_device();
    check_arg(device >= 0 && device < kMaxDevices, "CUDA device ordinal",
              "< " + std::to_string(kMaxDevices), device);
    Slot& slot = slots_[static_cast<std::size_t>(device)];
    std::call_once(slot.once, [&] { slot.value = compute(device); });
    return slot.value;
  }

 private:
  struct Slot {
    std::once_flag once;
    T value{};
  };
  std::array<Slot, kMaxDevices> slots_{};
};

}  // namespace moerun::cuda
