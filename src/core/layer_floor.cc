#include "core/layer_floor.h"

#include <cmath>

#include "moerun/dtype.h"
#include "moerun/errors.h"

namespace moerun {

double expert_weight_bytes(const MoeConfig& config) {
  const double h = static_cast<double>(config.hidden_size);
  const double i = static_cast<double>(config.intermediate_size);
  const double elements = 2 * i * h + h * i;
  double bytes = elements * static_cast<double>(dtype_size(config.weight_dtype));
  if (config.is_fp8()) {
    const auto blocks = [](double n) { return std::ceil(n / static_cast<double>(kQuantGroup)); };
    bytes += (blocks(2 * i) * blocks(h) + blocks(h) * blocks(i)) * sizeof(float);
  }
  return bytes;
}

LayerFloor layer_floor(const MoeConfig& config, double experts_used, double gemm_flops,
                       double copy_gbs, double matrix_tflops) {
  check_arg(experts_used >= 0, "experts_used", ">= 0", experts_used);
  check_arg(gemm_flops >= 0, "gemm_flops", ">= 0", gemm_flops);
  check_arg(copy_gbs > 0, "copy_gbs", "> 0 (the measured copy bandwidth)", copy_gbs);
  check_arg(matrix_tflops >= 0, "matrix_tflops", ">= 0 (0 = not measured)", matrix_tflops);
  LayerFloor floor;
  floor.hbm_us = experts_used * expert_weight_bytes(config) / (copy_gbs * 1e9) * 1e6;
  if (matrix_tflops > 0) floor.gemm_us = gemm_flops / (matrix_tflops * 1e12) * 1e6;
  return floor;
}

}  // namespace moerun
