#include "reference_check.h"

#include <cstring>

#include "core/metrics.h"
#include "cpu/dense_reference.h"
#include "moerun/errors.h"
#include "moerun/host_tensor.h"

namespace moerun::tools {

namespace {

// The `rows` of a host [T, C] tensor, in order.
HostTensor gather_rows(const TensorView& t, const std::vector<std::int64_t>& rows) {
  const std::int64_t cols = t.size(1);
  HostTensor out(t.dtype(), {static_cast<std::int64_t>(rows.size()), cols});
  const std::size_t row_bytes = static_cast<std::size_t>(cols) * dtype_size(t.dtype());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(
        static_cast<std::byte*>(out.view().data()) + i * row_bytes,
        static_cast<const std::byte*>(t.data()) + static_cast<std::size_t>(rows[i]) * row_bytes,
        row_bytes);
  }
  return out;
}

}  // namespace

ReferenceRows parse_reference(std::string_view value) {
  if (value == "full") return ReferenceRows::kFull;
  if (value == "none") return ReferenceRows::kNone;
  return ReferenceRows::kSampled;
}

std::string_view reference_rows_name(ReferenceRows rows) {
  switch (rows) {
    case ReferenceRows::kFull:
      return "full";
    case ReferenceRows::kSampled:
      return "sampled";
    case ReferenceRows::kNone:
      return "none";
  }
  return "unknown";
}

std::vector<std::int64_t> reference_rows(ReferenceRows mode, std::int64_t tokens) {
  std::vector<std::int64_t> rows;
  if (mode == ReferenceRows::kNone || tokens <= 0) return rows;
  const std::int64_t n = mode == ReferenceRows::kFull ? tokens : std::min(tokens, kSampledRows);
  for (std::int64_t i = 0; i < n; ++i) {
    rows.push_back(n == 1 ? 0 : i * (tokens - 1) / (n - 1));
  }
  return rows;
}

std::vector<bool> experts_of_rows(const TensorView& topk_ids, const std::vector<std::int64_t>& rows,
                                  int num_experts) {
  std::vector<bool> used(static_cast<std::size_t>(num_experts), false);
  const std::int64_t k = topk_ids.size(1);
  const int* ids = topk_ids.data_as<const int>();
  for (const std::int64_t r : rows) {
    for (std::int64_t j = 0; j < k; ++j) {
      const int id = ids[r * k + j];
      if (id >= 0 && id < num_experts) used[static_cast<std::size_t>(id)] = true;
    }
  }
  return used;
}

ReferenceResult check_rows(const TensorView& out, const TensorView& hidden,
                           const std::vector<ReferencePart>& parts,
                           const std::vector<std::int64_t>& rows, bool also_unquantized,
                           const ProgressFn& progress) {
  check_arg(!rows.empty(), "reference rows", "at least one", rows.size());
  const HostTensor x = gather_rows(hidden, rows);
  const HostTensor actual = gather_rows(out, rows);
  const bool fp8 = !parts.empty() && parts.front().config.is_fp8();
  const int passes = fp8 && also_unquantized ? 2 : 1;
  const double steps = static_cast<double>(parts.size() * static_cast<std::size_t>(passes));
  int step = 0;
  auto reference = [&](cpu::ActivationQuantization activations) {
    std::vector<double> sum(static_cast<std::size_t>(x.numel()), 0.0);
    for (const ReferencePart& p : parts) {
      const HostTensor ids = gather_rows(p.topk_ids, rows);
      const HostTensor weights = gather_rows(p.topk_weights, rows);
      const std::vector<double> part = cpu::dense_reference(
          p.config, p.weights, x.view(), ids.view(), weights.view(), activations, [&](double f) {
            if (progress) progress((step + f) / steps);
          });
      ++step;
      for (std::size_t i = 0; i < sum.size(); ++i) sum[i] += part[i];
    }
    return sum;
  };
  ReferenceResult r;
  r.rows = static_cast<std::int64_t>(rows.size());
  r.error = relative_error(actual.view(), reference(cpu::ActivationQuantization::kRecipe));
  if (passes == 2) {
    r.error_vs_unquantized =
        relative_error(actual.view(), reference(cpu::ActivationQuantization::kNone));
  }
  return r;
}

}  // namespace moerun::tools
