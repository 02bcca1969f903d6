// CUDA SiLU-and-mul (+ FP8 re-quantization) vs the CPU oracle, bit for bit.
#include "cpu/activation.h"

#include <gtest/gtest.h>

#include <string>

#include "cpu/row_segments.h"
#include "cuda/activation.h"
#include "cuda_test_util.h"

namespace moerun::test {
namespace {

void check_activation(Layout layout, DType dtype, std::int64_t inter) {
  SCOPED_TRACE(std::string(layout_name(layout)) + ", " + std::string(dtype_name(dtype)) + ", I " +
               std::to_string(inter));
  const std::uint64_t seed = fresh_seed();
  constexpr int kExperts = 5;
  constexpr std::int64_t kMMax = 256;
  const bool masked = layout == Layout::kMasked;
  const bool fp8 = dtype == DType::kFP8E4M3;
  const std::int64_t rows = masked ? kExperts * kMMax : 1024;

  // Row sets, as permute lays them out: counts include 0, 1, M_max and odd ones; contiguous
  // segments are rounded up to 128 rows (padding -1), and the buffer's last rows hold no expert.
  HostTensor masked_m(DType::kI32, {kExperts});
  const int counts[kExperts] = {0, 1, 129, static_cast<int>(kMMax), 77};
  for (int e = 0; e < kExperts; ++e) masked_m.data<int>()[e] = counts[e];
  HostTensor m_indices(DType::kI32, {rows});
  for (std::int64_t r = 0; r < rows; ++r) m_indices.data<int>()[r] = -1;
  std::int64_t segment = 0;
  for (int e = 0; e < kExperts; ++e) {
    for (int i = 0; i < counts[e]; ++i) m_indices.data<int>()[segment + i] = e;
    segment += (counts[e] + 127) / 128 * 128;
  }
  ASSERT_LT(segment, rows);

  // gate_up: normal values x 4 (exp over a wide range), plus extremes that reach expf's
  // overflow/underflow paths and zeros.
  HostTensor gate_up(DType::kBF16, {rows, 2 * inter});
  for (std::int64_t i = 0; i < gate_up.numel(); ++i) {
    float v = 4.0f * standard_normal(seed, 7, static_cast<std::uint64_t>(i));
    const std::uint64_t pick = static_cast<std::uint64_t>(i) * 2654435761u % 997;
    if (pick == 0) v = -100.0f;
    if (pick == 1) v = 95.0f;
    if (pick == 2) v = -89.0f;
    if (pick == 3) v = 0.0f;
    gate_up.data<bf16>()[i] = float_to_bf16(v);
  }
  const auto segments = masked ? cpu::masked_segments(masked_m.view(), kMMax)
                               : cpu::contiguous_segments(m_indices.view(), kExperts);
  HostTensor expected(dtype, {rows, inter});
  HostTensor expected_scale;
  // MN-major (core/scale_layout.h): masked [E_l, I / 128, M_max], contiguous [I / 128, rows].
  const ActScaleLayout scale_layout{masked ? kMMax : rows, inter / 128};
  const Shape scale_shape =
      masked ? Shape{rows / kMMax, inter / 128, kMMax} : Shape{inter / 128, rows};
  if (fp8) expected_scale = HostTensor(DType::kF32, scale_shape);
  cpu::silu_and_mul(gate_up.view(), segments, expected.view(), expected_scale.view());

  const DeviceTensor d_gate_up = DeviceTensor::from_host(gate_up.view());
  const DeviceTensor d_masked_m = DeviceTensor::from_host(masked_m.view());
  DeviceTensor out(dtype, {rows, inter});
  DeviceTensor out_scale;
  if (fp8) out_scale = DeviceTensor(DType::kF32, scale_shape);
  cuda::RowSet row_set{layout, d_masked_m.view(), masked ? kMMax : 0};
  cuda::silu_and_mul(d_gate_up.view(), row_set, out.view(), out_scale.view(), nullptr);
  const HostTensor got = out.to_host();
  const HostTensor got_scale = fp8 ? out_scale.to_host() : HostTensor();

  std::vector<char> valid(static_cast<std::size_t>(rows), 0);
  for (const auto& s : segments) {
    for (std::int64_t r = s.begin; r < s.end; ++r) valid[r] = 1;
  }
  int mismatched_rows = 0, written_empty_rows = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    if (valid[r]) {
      mismatched_rows += !same_row(got, expected, r, inter);
      if (fp8) {
        mismatched_rows +=
            !same_scale_row(got_scale, scale_layout, expected_scale, scale_layout, r);
      }
    } else {
      written_empty_rows += !row_poisoned(got, r, inter);
      if (fp8) written_empty_rows += !scale_row_poisoned(got_scale, scale_layout, r);
    }
  }
  EXPECT_EQ(mismatched_rows, 0) << "rows differing from the oracle (values or scales)";
  EXPECT_EQ(written_empty_rows, 0);
}

TEST(CudaSiluAndMul, MatchesOracleBitwise) {
  MOERUN_REQUIRE_GPU();
  for (Layout layout : {Layout::kMasked, Layout::kContiguous}) {
    check_activation(layout, DType::kFP8E4M3, 256);
    check_activation(layout, DType::kFP8E4M3, 2048);
    check_activation(layout, DType::kBF16, 200);
    check_activation(layout, DType::kBF16, 1536);
    // A partial last 256-column chunk per row: FP8 half a chunk (one idle 16-lane group), BF16
    // one active lane; and a long row.
    check_activation(layout, DType::kFP8E4M3, 1664);
    check_activation(layout, DType::kBF16, 2056);
    check_activation(layout, DType::kBF16, 14336);
  }
}

}  // namespace
}  // namespace moerun::test
