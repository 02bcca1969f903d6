#include "cpu/activation.h"

#include <string>

#include "core/checks.h"
#include "core/parallel.h"
#include "core/portable_math.h"
#include "core/scale_layout.h"
#include "cpu/quant.h"
#include "moerun/config.h"
#include "moerun/errors.h"

namespace moerun::cpu {

void silu_and_mul(const TensorView& gate_up, const std::vector<RowSegment>& segments,
                  const TensorView& out, const TensorView& out_scale) {
  check_arg(gate_up.dtype() == DType::kBF16, "gate_up dtype", "bf16", dtype_name(gate_up.dtype()));
  const std::int64_t width = gate_up.size(gate_up.ndim() - 1);
  check_arg(width % 2 == 0, "gate_up columns", "an even count (2I)", width);
  const std::int64_t inter = width / 2;
  const std::int64_t rows = gate_up.numel() / std::max<std::int64_t>(1, width);
  const bool fp8 = out.dtype() == DType::kFP8E4M3;
  check_arg(fp8 || out.dtype() == DType::kBF16, "activation out dtype", "bf16 or fp8_e4m3",
            dtype_name(out.dtype()));
  check_arg(out.numel() == rows * inter && out.size(out.ndim() - 1) == inter,
            "activation out shape", "gate_up's rows x I (" + std::to_string(inter) + ")",
            out.shape_string());
  if (fp8) {
    check_arg(inter % kQuantGroup == 0, "intermediate_size", "a multiple of 128 for FP8", inter);
    // MN-major; the scale tensor's last dimension is its rows per group (M_max or all rows).
    const std::int64_t group_rows =
        out_scale.defined() && out_scale.ndim() >= 2 ? out_scale.size(out_scale.ndim() - 1) : 0;
    detail::check_act_scale(out_scale, "activation out_scale", rows, inter / kQuantGroup,
                            group_rows, DeviceType::kCpu);
  }
  const ActScaleLayout scale_layout{fp8 ? out_scale.size(out_scale.ndim() - 1) : 1,
                                    inter / kQuantGroup};
  const auto* src = gate_up.data_as<const bf16>();
  detail::parallel_for(
      static_cast<std::int64_t>(segments.size()), 1, [&](std::int64_t begin, std::int64_t end) {
        std::vector<float> y(static_cast<std::size_t>(inter));
        std::vector<float> scales(static_cast<std::size_t>(inter / kQuantGroup));
        for (std::int64_t s = begin; s < end; ++s) {
          const RowSegment& seg = segments[static_cast<std::size_t>(s)];
          for (std::int64_t r = seg.begin; r < seg.end; ++r) {
            const bf16* gate = src + r * width;
            const bf16* up = gate + inter;
            for (std::int64_t c = 0; c < inter; ++c) {
              const float g = bf16_to_float(gate[c]);
              y[c] = detail::silu_f32(g) * bf16_to_float(up[c]);
            }
            if (fp8) {
              quantize_row_fp8(y.data(), inter, out.data_as<fp8e4m3>() + r * inter, scales.data());
              for (std::int64_t g = 0; g < inter / kQuantGroup; ++g) {
                out_scale.data_as<float>()[scale_layout.index(r, g)] = scales[g];
              }
            } else {
              bf16* dst = out.data_as<bf16>() + r * inter;
              for (std::int64_t c = 0; c < inter; ++c) dst[c] = float_to_bf16(y[c]);
            }
          }
        }
      });
}

}  // namespace moerun::cpu
