#include "cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "core/checks.h"
#include "core/parallel.h"
#include "core/scale_layout.h"
#include "cpu/row_segments.h"
#include "moerun/config.h"
#include "moerun/errors.h"

namespace moerun::cpu {

namespace {

// Columns of the output computed per work item; also the overlap report's N tile.
constexpr std::int64_t kBlockN = 128;
// Rows sharing each decoded weight row (register blocking).
constexpr int kRowsPerStep = 4;

struct Problem {
  const std::byte* a;
  const float* a_scale;           // FP8 only, MN-major
  ActScaleLayout a_scale_layout;  // FP8 only
  const std::byte* b;
  const float* b_scale;  // FP8 only
  bf16* out;
  std::int64_t n;
  std::int64_t k;
  bool fp8;
};

void decode(const std::byte* src, bool fp8, std::int64_t count, float* dst) {
  if (fp8) {
    const auto* codes = reinterpret_cast<const fp8e4m3*>(src);
    for (std::int64_t i = 0; i < count; ++i) dst[i] = fp8e4m3_to_float(codes[i]);
  } else {
    const auto* values = reinterpret_cast<const bf16*>(src);
    for (std::int64_t i = 0; i < count; ++i) dst[i] = bf16_to_float(values[i]);
  }
}

// acc[r] = sum_i a[r][i] * b[i] over `len` (a multiple of 8) in fp32, eight lanes per row.
inline void dot_rows(const float* const* a, const float* b, std::int64_t len, float* acc) {
  float lanes[kRowsPerStep][8] = {};
  for (std::int64_t i = 0; i < len; i += 8) {
    for (int r = 0; r < kRowsPerStep; ++r) {
      for (int l = 0; l < 8; ++l) lanes[r][l] += a[r][i + l] * b[i + l];
    }
  }
  for (int r = 0; r < kRowsPerStep; ++r) {
    float sum = 0.0f;
    for (int l = 0; l < 8; ++l) sum += lanes[r][l];
    acc[r] = sum;
  }
}

// One work item: rows [seg.begin, seg.end) of expert seg.expert times weight rows [n0, n1).
void run_tile(const Problem& p, const RowSegment& seg, std::int64_t n0, std::int64_t n1,
              std::vector<float>& b_tile, std::vector<float>& a_rows) {
  const std::int64_t k = p.k, k_blocks = k / kQuantGroup;
  const std::size_t elem = p.fp8 ? 1 : 2;
  const std::byte* b_expert = p.b + static_cast<std::size_t>(seg.expert * p.n * k) * elem;
  decode(b_expert + static_cast<std::size_t>(n0 * k) * elem, p.fp8, (n1 - n0) * k, b_tile.data());
  const float* b_scale = p.fp8 ? p.b_scale + seg.expert * (p.n / kQuantGroup) * k_blocks : nullptr;

  for (std::int64_t m0 = seg.begin; m0 < seg.end; m0 += kRowsPerStep) {
    const int rows = static_cast<int>(std::min<std::int64_t>(kRowsPerStep, seg.end - m0));
    const float* a_ptr[kRowsPerStep];
    std::int64_t scale_row[kRowsPerStep];
    for (int r = 0; r < kRowsPerStep; ++r) {
      float* dst = a_rows.data() + r * k;
      // Missing rows of a short step compute on zeros and are not stored.
      if (r < rows) {
        decode(p.a + static_cast<std::size_t>((m0 + r) * k) * elem, p.fp8, k, dst);
      } else {
        std::fill(dst, dst + k, 0.0f);
      }
      a_ptr[r] = dst;
      scale_row[r] = m0 + std::min(r, rows - 1);
    }
    for (std::int64_t n = n0; n < n1; ++n) {
      const float* b_row = b_tile.data() + (n - n0) * k;
      float acc[kRowsPerStep] = {};
      if (p.fp8) {
        // DeepSeek-V3's recipe: fp32 partial sums per 128-wide K block, scaled ("promoted") into
        // an fp32 accumulator by activation scale x weight block scale.
        const float* w_scale = b_scale + (n / kQuantGroup) * k_blocks;
        for (std::int64_t kb = 0; kb < k_blocks; ++kb) {
          const float* a_block[kRowsPerStep];
          for (int r = 0; r < kRowsPerStep; ++r) a_block[r] = a_ptr[r] + kb * kQuantGroup;
          float partial[kRowsPerStep];
          dot_rows(a_block, b_row + kb * kQuantGroup, kQuantGroup, partial);
          for (int r = 0; r < kRowsPerStep; ++r) {
            const float a_scale = p.a_scale[p.a_scale_layout.index(scale_row[r], kb)];
            acc[r] += partial[r] * (a_scale * w_scale[kb]);
          }
        }
      } else {
        dot_rows(a_ptr, b_row, k, acc);
      }
      for (int r = 0; r < rows; ++r) p.out[(m0 + r) * p.n + n] = float_to_bf16(acc[r]);
    }
  }
}

template <class OnTileDone>
void run_segments(const Problem& p, const std::vector<RowSegment>& segments,
                  OnTileDone&& on_tile_done) {
  const std::int64_t n_tiles = (p.n + kBlockN - 1) / kBlockN;
  const auto items = static_cast<std::int64_t>(segments.size()) * n_tiles;
  detail::parallel_for(items, 1, [&](std::int64_t begin, std::int64_t end) {
    std::vector<float> b_tile(static_cast<std::size_t>(kBlockN * p.k));
    std::vector<float> a_rows(static_cast<std::size_t>(kRowsPerStep * p.k));
    for (std::int64_t item = begin; item < end; ++item) {
      const RowSegment& seg = segments[static_cast<std::size_t>(item / n_tiles)];
      const std::int64_t n0 = (item % n_tiles) * kBlockN;
      run_tile(p, seg, n0, std::min(p.n, n0 + kBlockN), b_tile, a_rows);
      on_tile_done(seg);
    }
  });
}

// Checks the operands of either layout; FP8 A scales come in groups of `a_scale_group_rows` rows
// (masked: M_max; contiguous: M_sum).
Problem make_problem(const GemmOperand& a, const GemmOperand& b, const TensorView& out,
                     std::int64_t a_scale_group_rows) {
  check_arg(b.data.ndim() == 3, "B (weights) rank", "3 ([E_l, N, K])", b.data.ndim());
  const std::int64_t experts = b.data.size(0), n = b.data.size(1), k = b.data.size(2);
  const bool fp8 = b.data.dtype() == DType::kFP8E4M3;
  check_arg(fp8 || b.data.dtype() == DType::kBF16, "B (weights) dtype", "bf16 or fp8_e4m3",
            dtype_name(b.data.dtype()));
  check_tensor(b.data, "B (weights)", b.data.dtype(), {experts, n, k}, DeviceType::kCpu);
  check_arg(k % 8 == 0, "K", "a multiple of 8", k);
  // The activation dtype follows the weights': BF16 weights never take FP8 activations.
  check_arg(a.data.dtype() == b.data.dtype(), "A (activations) dtype",
            std::string(dtype_name(b.data.dtype())) + " (the weights' dtype)",
            dtype_name(a.data.dtype()));
  const std::int64_t a_rows = a.data.numel() / std::max<std::int64_t>(1, k);
  check_arg(a.data.size(a.data.ndim() - 1) == k, "A (activations) K", std::to_string(k),
            a.data.size(a.data.ndim() - 1));
  check_arg(a.data.is_contiguous() && a.data.device().type == DeviceType::kCpu,
            "A (activations) layout", "contiguous on the cpu", a.data.shape_string());
  check_arg(out.dtype() == DType::kBF16, "out dtype", "bf16", dtype_name(out.dtype()));
  check_arg(out.numel() == a_rows * n && out.size(out.ndim() - 1) == n && out.is_contiguous(),
            "out shape", "A's rows x N (" + std::to_string(n) + "), contiguous",
            out.shape_string());
  const float* a_scale = nullptr;
  const float* b_scale = nullptr;
  if (fp8) {
    check_arg(n % kQuantGroup == 0 && k % kQuantGroup == 0, "B (weights) N x K",
              "multiples of 128 for FP8", std::to_string(n) + " x " + std::to_string(k));
    check_tensor(b.scale, "B scale", DType::kF32, {experts, n / kQuantGroup, k / kQuantGroup},
                 DeviceType::kCpu);
    detail::check_act_scale(a.scale, "A scale", a_rows, k / kQuantGroup, a_scale_group_rows,
                            DeviceType::kCpu);
    a_scale = a.scale.data_as<const float>();
    b_scale = b.scale.data_as<const float>();
  } else {
    check_arg(!a.scale.defined() && !b.scale.defined(), "BF16 operand scales", "none",
              "a scale tensor");
  }
  return {static_cast<const std::byte*>(a.data.data()),
          a_scale,
          {a_scale_group_rows, k / kQuantGroup},
          static_cast<const std::byte*>(b.data.data()),
          b_scale,
          out.data_as<bf16>(),
          n,
          k,
          fp8};
}

}  // namespace

std::optional<OverlapReport> grouped_gemm_masked(const GemmOperand& a, const GemmOperand& b,
                                                 const TensorView& masked_m, const TensorView& out,
                                                 const OverlapSignal* signal) {
  check_arg(a.data.ndim() == 3 && b.data.ndim() == 3 && a.data.size(0) == b.data.size(0),
            "A (activations) shape", "[E_l (as B), M_max, K]", a.data.shape_string());
  const std::int64_t experts = a.data.size(0), m_max = a.data.size(1);
  const Problem p = make_problem(a, b, out, m_max);
  check_tensor(masked_m, "masked_m", DType::kI32, {experts}, DeviceType::kCpu);
  const auto segments = masked_segments(masked_m, m_max);
  if (signal == nullptr) {
    run_segments(p, segments, [](const RowSegment&) {});
    return std::nullopt;
  }
  check_arg(signal->block_m > 0, "block_m", "> 0", signal->block_m);
  const std::int64_t m_blocks = (m_max + signal->block_m - 1) / signal->block_m;
  check_tensor(signal->counters, "overlap counters", DType::kI32, {experts * m_blocks},
               DeviceType::kCpu);
  int* counters = signal->counters.data_as<int>();
  run_segments(p, segments, [&](const RowSegment& seg) {
    const std::int64_t blocks = (seg.end - seg.begin + signal->block_m - 1) / signal->block_m;
    for (std::int64_t blk = 0; blk < blocks; ++blk) {
      std::atomic_ref<int>(counters[seg.expert * m_blocks + blk])
          .fetch_add(1, std::memory_order_release);
    }
  });
  return OverlapReport{signal->block_m, static_cast<int>((p.n + kBlockN - 1) / kBlockN)};
}

void grouped_gemm_contiguous(const GemmOperand& a, const GemmOperand& b,
                             const TensorView& m_indices, const TensorView& out) {
  check_arg(a.data.ndim() == 2, "A (activations) rank", "2 ([M_sum, K])", a.data.ndim());
  const Problem p = make_problem(a, b, out, a.data.size(0));
  check_tensor(m_indices, "m_indices", DType::kI32, {a.data.size(0)}, DeviceType::kCpu);
  run_segments(p, contiguous_segments(m_indices, static_cast<int>(b.data.size(0))),
               [](const RowSegment&) {});
}

}  // namespace moerun::cpu
