// Error handling of the CUDA backend's host code: every runtime call and launch is checked and a
// failure becomes a moerun::CudaError naming the call, file and line.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "moerun/errors.h"

namespace moerun::cuda {

// A failed CUDA runtime call or launch: the device, not the input (exit code 3 in the CLI).
class CudaError : public ResourceError {
 public:
  using ResourceError::ResourceError;
};

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* expression, const char* file,
                                   int line);

inline void check_status(cudaError_t status, const char* expression, const char* file, int line) {
  if (status != cudaSuccess) throw_cuda_error(status, expression, file, line);
}

// cudaMalloc of `bytes` (at least 1) for `what` ("the layer's workspace for max_tokens 4096"): a
// failure throws a CudaError naming the size, the purpose and the device memory free, and clears
// the runtime's last error so that no later launch check reports it again.
void* device_allocate(std::size_t bytes, const std::string& what);

// Ceil division for launch shapes.
template <class T>
constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

}  // namespace moerun::cuda

#define MOERUN_CUDA_CHECK(expression) \
  ::moerun::cuda::check_status((expression), #expression, __FILE__, __LINE__)
// After each <<<>>> launch: a bad launch configuration shows up here, not at the next sync.
#define MOERUN_CUDA_CHECK_LAUNCH() \
  ::moerun::cuda::check_status(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
