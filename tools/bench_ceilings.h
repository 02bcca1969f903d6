// The ceilings `moerun bench` and `moerun bench-gemm` report against, measured in the same run on
// the same device: copy bandwidth and the dense BF16 / FP8 matrix rates.
#pragma once

#include <cuda_runtime_api.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace moerun::tools {

struct Ceilings {
  double copy_gbs = 0;     // 1 GiB cudaMemcpyAsync device to device, bytes read + written
  double bf16_tflops = 0;  // cuBLASLt 8192^3, bf16 inputs and output, fp32 accumulation
  double fp8_tflops = 0;   // cuBLASLt 8192^3, e4m3 inputs, bf16 output, fp32 accumulation
  std::string copy_method, matrix_method;
  std::string matrix_error;  // why the matrix rates are 0, if they are
};

// Random data (never zeros), warm-up, then the median of `repeat` event-timed runs each.
Ceilings measure_ceilings(int repeat, cudaStream_t stream);

// The report's "ceilings" object (null when not measured).
nlohmann::json ceilings_json(const std::optional<Ceilings>& ceilings);
// The text report's ceilings lines, on stdout.
void print_ceilings(const Ceilings& ceilings);

}  // namespace moerun::tools
