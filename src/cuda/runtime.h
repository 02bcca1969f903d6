// Device detection for the CUDA backend.
#pragma once

#include <string>

namespace moerun::cuda {

// Empty when a device that can run this build's kernels (sm_90) is visible; else why not.
std::string device_unavailable_reason();
// "NVIDIA H200 (sm_90, 139 GiB)": the current device, for reports.
std::string device_description();

}  // namespace moerun::cuda
