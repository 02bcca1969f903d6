#include "core/metrics.h"

#include <cmath>
#include <limits>
#include <string>

#include "moerun/errors.h"

namespace moerun {

std::vector<double> to_double(const TensorView& values) {
  check_arg(values.device().type == DeviceType::kCpu && values.is_contiguous(), "values",
            "a contiguous host tensor", device_name(values.device()));
  std::vector<double> out(static_cast<std::size_t>(values.numel()));
  for (std::int64_t i = 0; i < values.numel(); ++i) {
    switch (values.dtype()) {
      case DType::kBF16:
        out[i] = bf16_to_float(values.data_as<const bf16>()[i]);
        break;
      case DType::kF32:
        out[i] = values.data_as<const float>()[i];
        break;
      case DType::kFP8E4M3:
        out[i] = fp8e4m3_to_float(values.data_as<const fp8e4m3>()[i]);
        break;
      case DType::kI32:
        out[i] = values.data_as<const int>()[i];
        break;
    }
  }
  return out;
}

double relative_error(const TensorView& actual, const std::vector<double>& reference) {
  check_arg(static_cast<std::size_t>(actual.numel()) == reference.size(), "actual elements",
            std::to_string(reference.size()), actual.numel());
  const std::vector<double> a = to_double(actual);
  double diff = 0.0, norm = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    diff += (a[i] - reference[i]) * (a[i] - reference[i]);
    norm += reference[i] * reference[i];
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

double relative_error(const TensorView& actual, const TensorView& reference) {
  return relative_error(actual, to_double(reference));
}

}  // namespace moerun
