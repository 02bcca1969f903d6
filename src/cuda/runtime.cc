// The CUDA backend's runtime helpers: device detection and error reporting.
#include "cuda/runtime.h"

#include <cuda_runtime_api.h>

#include <string>

#include "cuda/cuda_check.h"
#include "moerun/layer.h"

namespace moerun {

bool cuda_available() { return cuda::device_unavailable_reason().empty(); }

namespace cuda {

void throw_cuda_error(cudaError_t status, const char* expression, const char* file, int line) {
  throw CudaError(std::string("CUDA error ") + cudaGetErrorName(status) + " (" +
                  cudaGetErrorString(status) + ") in " + expression + " at " + file + ":" +
                  std::to_string(line));
}

std::string device_unavailable_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    // Clear the error so that later runtime calls do not report it again.
    cudaGetLastError();
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(status);
  }
  if (count == 0) return "cudaGetDeviceCount returned 0 devices";
  int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return "cudaGetDeviceProperties failed";
  }
  // NOTE: the kernels are built for sm_90a only (wgmma-era Hopper); no other GPU can run them.
  if (prop.major != 9 || prop.minor != 0) {
    return std::string("device ") + prop.name + " is sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor) + "; this build has sm_90a kernels only";
  }
  return {};
}

int current_device() {
  int device = 0;
  MOERUN_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

ScopedDevice::ScopedDevice(int device) : previous_(current_device()), device_(device) {
  if (device_ != previous_) MOERUN_CUDA_CHECK(cudaSetDevice(device_));
}

ScopedDevice::~ScopedDevice() {
  if (device_ != previous_) cudaSetDevice(previous_);  // no throw from a destructor
}

}  // namespace cuda
}  // namespace moerun
