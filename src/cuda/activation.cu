// SiLU-and-mul kernel, fused with the FP8 1x128 re-quantization of its output.
//
// Exactness: y = silu_f32(gate) * up, with silu_f32 from core/portable_math.h (IEEE operations
// only, the same bits on the host and the device), then bf16 rounding or the FP8 group step of
// quantize_fp8_group: the oracle's operations one for one, so the result is bit for bit the
// oracle's.
//
// Speed: a streaming kernel (read 2I bf16, write I bf16 or FP8 per row), so the work is cut into
// chunks of 256 columns of one row (a warp, 8 columns per lane, 16-byte loads) and each warp
// keeps kUnroll chunks' loads in flight before it computes any of them. Only rows holding tokens
// are read: masked rows are counted in a compacted list (expert e's first masked_m[e] rows),
// contiguous padding rows (m_indices -1) are skipped.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "core/portable_math.h"
#include "cuda/activation.h"
#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/permute.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

struct ActParams {
  const std::uint16_t* gate_up;  // [rows, 2I] bf16
  void* out;                     // [rows, I] bf16 or fp8
  float* out_scale;              // FP8: [rows, I / 128]
  long long rows;
  int inter;
  int vectors;           // 8-column vectors per row: I / 8
  int chunks;            // 256-column chunks per row: ceil(vectors / 32)
  const int* masked_m;   // masked: [experts]
  int experts;           // masked
  long long m_max;       // masked; 0 = contiguous
  const int* m_indices;  // contiguous: [rows]
};

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Chunks whose loads a warp issues before computing: 4 x 32 bytes per lane in flight. Enough
// bytes in flight per SM at the occupancy the registers allow (docs/cuda-backend.md).
constexpr int kUnroll = 4;

// The buffer row of work row v (masked: v counts the compacted rows; contiguous: v is the buffer
// row), or -1 for a contiguous padding row. Warp-uniform.
__device__ __forceinline__ long long buffer_row(const ActParams& p, const long long* first_row,
                                                long long v) {
  if (p.m_max > 0) {
    // The expert holding compacted row v: the last e with first_row[e] <= v (empty experts share
    // their start with the next one).
    int lo = 0, hi = p.experts - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (first_row[mid] <= v) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    return lo * p.m_max + (v - first_row[lo]);
  }
  return __ldg(p.m_indices + v) >= 0 ? v : -1;
}

// One lane's 8 columns: y = silu(gate) * up in the oracle's fp32 operations.
__device__ __forceinline__ void silu_mul8(const uint4& gate, const uint4& up, float (&y)[8]) {
  float g[8], u[8];
  unpack_bf16x8(gate, g);
  unpack_bf16x8(up, u);
#pragma unroll
  for (int i = 0; i < 8; ++i) y[i] = __fmul_rn(detail::silu_f32(g[i]), u[i]);
}

// Launch: grid-stride over (work row, chunk) items, kUnroll items per warp per step; static shared
// memory: the masked layout's row prefix (E_l + 1 longs) and counts. FP8: a 128-column group is
// 16 consecutive lanes of one chunk (I % 128 == 0 and chunks start at multiples of 256 columns),
// so a group's lanes are all active or all idle; idle lanes pass zeros to the shuffles.
template <bool kFp8>
__global__ void __launch_bounds__(kThreads) silu_and_mul_kernel(ActParams p) {
  __shared__ long long first_row[kPermuteMaxLocalExperts + 1];
  __shared__ int counts[kPermuteMaxLocalExperts];
  const bool masked = p.m_max > 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (masked) {
    for (int e = threadIdx.x; e < p.experts; e += kThreads) {
      counts[e] = static_cast<int>(min(static_cast<long long>(p.masked_m[e]), p.m_max));
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l sums experts [l * per_lane, (l + 1) * per_lane); a warp scan joins the lanes.
      const int per_lane = (p.experts + 31) / 32;
      const int begin = min(lane * per_lane, p.experts), end = min(begin + per_lane, p.experts);
      long long sum = 0;
      for (int e = begin; e < end; ++e) sum += counts[e];
      long long inclusive = sum;
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {
        const long long other = __shfl_up_sync(0xffffffffu, inclusive, offset);
        if (lane >= offset) inclusive += other;
      }
      long long running = inclusive - sum;
      for (int e = begin; e < end; ++e) {
        first_row[e] = running;
        running += counts[e];
      }
      if (lane == 31) first_row[p.experts] = inclusive;
    }
    __syncthreads();
  }

  const long long total = (masked ? first_row[p.experts] : p.rows) * p.chunks;
  const long long stride = static_cast<long long>(gridDim.x) * kWarps;
  for (long long base = static_cast<long long>(blockIdx.x) * kWarps + warp; base < total;
       base += kUnroll * stride) {
    long long row[kUnroll];
    int vec[kUnroll];
    uint4 gate[kUnroll], up[kUnroll];
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      const long long at = base + i * stride;
      row[i] = -1;
      vec[i] = 0;
      if (at < total) {
        const long long v = at / p.chunks;
        vec[i] = static_cast<int>(at - v * p.chunks) * 32 + lane;
        row[i] = buffer_row(p, first_row, v);
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      gate[i] = make_uint4(0, 0, 0, 0);
      up[i] = make_uint4(0, 0, 0, 0);
      if (row[i] >= 0 && vec[i] < p.vectors) {
        const auto* src = reinterpret_cast<const uint4*>(p.gate_up + row[i] * 2 * p.inter);
        gate[i] = __ldcs(src + vec[i]);
        up[i] = __ldcs(src + p.vectors + vec[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kUnroll; ++i) {
      if (row[i] < 0) continue;  // warp-uniform
      float y[8];
      silu_mul8(gate[i], up[i], y);
      const bool active = vec[i] < p.vectors;
      if constexpr (kFp8) {
        float scale;
        std::uint32_t words[2];
        quantize_fp8_group(y, scale, words);  // all lanes: full-mask shuffles
        if (active) {
          auto* out = static_cast<std::uint8_t*>(p.out) + row[i] * p.inter;
          reinterpret_cast<uint2*>(out)[vec[i]] = make_uint2(words[0], words[1]);
          if (lane % 16 == 0) p.out_scale[row[i] * (p.inter / 128) + vec[i] / 16] = scale;
        }
      } else if (active) {
        auto* out = reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(p.out) + row[i] * p.inter);
        out[vec[i]] = pack_bf16x8(y);
      }
    }
  }
}

// Blocks that fit on one SM at once, per device (not a stream operation; cached after the first
// call, so later calls may be captured in a CUDA graph).
template <bool kFp8>
int resident_blocks() {
  static const int count = [] {
    int device = 0, sms = 0, per_sm = 0;
    MOERUN_CUDA_CHECK(cudaGetDevice(&device));
    MOERUN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    MOERUN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, silu_and_mul_kernel<kFp8>, kThreads, 0));
    return sms * std::max(per_sm, 1);
  }();
  return count;
}

template <bool kFp8>
void launch(const ActParams& p, long long rows_upper, cudaStream_t stream) {
  const long long blocks = std::clamp<long long>(
      ceil_div<long long>(rows_upper * p.chunks, kWarps * kUnroll), 1, resident_blocks<kFp8>());
  silu_and_mul_kernel<kFp8><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void silu_and_mul(const TensorView& gate_up, const RowSet& rows, const TensorView& out,
                  const TensorView& out_scale, cudaStream_t stream) {
  check_arg(gate_up.dtype() == DType::kBF16 && gate_up.is_contiguous() &&
                gate_up.device().type == DeviceType::kCuda,
            "gate_up", "contiguous bf16 on cuda", gate_up.shape_string());
  const std::int64_t width = gate_up.size(gate_up.ndim() - 1);
  check_arg(width % 16 == 0 && width > 0, "gate_up columns", "2I with I a multiple of 8", width);
  const std::int64_t inter = width / 2;
  const std::int64_t n_rows = gate_up.numel() / width;
  const bool fp8 = out.dtype() == DType::kFP8E4M3;
  check_arg(fp8 || out.dtype() == DType::kBF16, "activation out dtype", "bf16 or fp8_e4m3",
            dtype_name(out.dtype()));
  check_arg(out.numel() == n_rows * inter && out.size(out.ndim() - 1) == inter &&
                out.is_contiguous() && out.device().type == DeviceType::kCuda,
            "activation out", "contiguous [rows, I = " + std::to_string(inter) + "] on cuda",
            out.shape_string());
  if (fp8) {
    check_arg(inter % kQuantGroup == 0, "intermediate_size", "a multiple of 128 for FP8", inter);
    check_arg(out_scale.defined() && out_scale.dtype() == DType::kF32 &&
                  out_scale.numel() == n_rows * (inter / kQuantGroup) &&
                  out_scale.device().type == DeviceType::kCuda,
              "activation out_scale", "f32 [rows, I / 128] on cuda",
              out_scale.defined() ? out_scale.shape_string() : std::string("none"));
  }
  ActParams p{};
  if (rows.layout == Layout::kMasked) {
    check_arg(rows.m_max > 0 && n_rows % rows.m_max == 0, "m_max",
              "a positive divisor of the rows (" + std::to_string(n_rows) + ")", rows.m_max);
    const std::int64_t experts = n_rows / rows.m_max;
    check_arg(experts <= kPermuteMaxLocalExperts, "masked experts",
              "<= " + std::to_string(kPermuteMaxLocalExperts), experts);
    check_tensor(rows.masked_m, "masked_m", DType::kI32, {experts}, DeviceType::kCuda);
    p.masked_m = rows.masked_m.data_as<const int>();
    p.experts = static_cast<int>(experts);
    p.m_max = rows.m_max;
  } else {
    check_tensor(rows.m_indices, "m_indices", DType::kI32, {n_rows}, DeviceType::kCuda);
    p.m_indices = rows.m_indices.data_as<const int>();
  }
  check_arg(reinterpret_cast<std::uintptr_t>(gate_up.data()) % 16 == 0 &&
                reinterpret_cast<std::uintptr_t>(out.data()) % 16 == 0,
            "gate_up/activation out", "16-byte aligned device pointers", "a misaligned pointer");
  check_arg(rows.max_rows_with_tokens >= 0, "max_rows_with_tokens", ">= 0 (0: unknown)",
            rows.max_rows_with_tokens);
  if (n_rows == 0) return;
  p.gate_up = static_cast<const std::uint16_t*>(gate_up.data());
  p.out = out.data();
  p.out_scale = fp8 ? out_scale.data_as<float>() : nullptr;
  p.rows = n_rows;
  p.inter = static_cast<int>(inter);
  const std::int64_t rows_upper =
      rows.max_rows_with_tokens > 0 ? std::min(n_rows, rows.max_rows_with_tokens) : n_rows;
  p.vectors = static_cast<int>(inter / 8);
  p.chunks = static_cast<int>(ceil_div<std::int64_t>(p.vectors, 32));
  if (fp8) {
    launch<true>(p, rows_upper, stream);
  } else {
    launch<false>(p, rows_upper, stream);
  }
}

}  // namespace moerun::cuda
