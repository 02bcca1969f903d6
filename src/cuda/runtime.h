// Device detection and selection for the CUDA backend.
#pragma once

#include <string>

namespace moerun::cuda {

// Empty when a device that can run this build's kernels (sm_90) is visible; else why not.
std::string device_unavailable_reason();

// The calling thread's current device (cudaGetDevice).
int current_device();

// Makes `device` current on this thread for its lifetime and restores the caller's device after:
// a layer runs on its own device whatever the caller's thread was set to.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device);
  ~ScopedDevice();
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int previous_;
  int device_;
};

}  // namespace moerun::cuda
