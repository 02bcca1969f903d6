#include "layer_values.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "core/checks.h"
#include "moerun/errors.h"

namespace moerun::tools {

void check_layer_values(const TensorView& result, const char* name, const TensorView& hidden,
                        const std::string& hidden_source) {
  const std::optional<std::int64_t> bad = detail::first_non_finite(result);
  if (!bad) return;
  const std::int64_t row = *bad / result.size(1), h = hidden.size(1);
  float largest = 0.0f;
  for (std::int64_t c = 0; c < h; ++c) {
    largest =
        std::max(largest, std::fabs(bf16_to_float(hidden.data_as<const bf16>()[row * h + c])));
  }
  char magnitude[32];
  std::snprintf(magnitude, sizeof(magnitude), "%.3g", static_cast<double>(largest));
  throw InvalidArgument("hidden states row " + std::to_string(row) + " of " + hidden_source,
                        "values the layer's fp32 and bf16 arithmetic can hold",
                        std::string(name) + detail::index_text(result.shape(), *bad) + " = " +
                            detail::value_text(result, *bad) + " (the row's largest magnitude is " +
                            magnitude + "); nothing was written");
}

}  // namespace moerun::tools
