// SiLU-and-mul kernel, fused with the FP8 1x128 re-quantization of its output.
//
// Exactness: y = silu_f32(gate) * up, with silu_f32 from core/portable_math.h (IEEE operations
// only, the same bits on the host and the device), then bf16 rounding or the FP8 group step of
// quantize_fp8_group: the oracle's operations one for one, so the result is bit for bit the
// oracle's.
//
// Speed: a streaming kernel (read 2I bf16, write I bf16 or FP8 per row). Work is cut into
// chunks of 256 columns of one row (a warp: 8 columns, 16 + 16 bytes per lane); each warp walks
// its own run of consecutive chunks over the rows that hold tokens only (expert by expert, from
// masked_m), and keeps the next kStages - 1 chunks in flight with cp.async into a per-warp
// shared-memory ring while it computes the current one, so loads never wait for compute. With
// the loads out of the way the kernel is bound by its arithmetic (~30 operations per element for
// silu_f32), so with enough work each block first fills a 31 KiB table of silu_f32 over the bf16
// gates that need exp (cuda/silu_bf16.h; each entry the same evaluation, so the result is bit for
// bit unchanged) and then reads one entry per element.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "core/checks.h"
#include "core/portable_math.h"
#include "core/scale_layout.h"
#include "cuda/activation.h"
#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/per_device.h"
#include "cuda/permute.h"
#include "cuda/silu_bf16.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

struct ActParams {
  const std::uint16_t* gate_up;  // [rows, 2I] bf16
  void* out;                     // [rows, I] bf16 or fp8
  float* out_scale;              // FP8: MN-major (core/scale_layout.h)
  ActScaleLayout scale_layout;   // FP8: rows per group, I / 128
  long long rows;
  int inter;
  int vectors;          // 8-column vectors per row: I / 8
  int chunks;           // 256-column chunks per row: ceil(vectors / 32)
  const int* masked_m;  // [experts]
  int experts;
  long long m_max;  // masked; 0 = contiguous
};

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Ring stages per warp (1 KiB each: a chunk's gate and up halves). kStages - 1 chunks load while
// one computes.
constexpr int kStages = 4;
constexpr int kStageBytes = 32 * 32;
constexpr int kRingBytes = kWarps * kStages * kStageBytes;
// Elements (rows that can hold tokens x I) from which the table pays for its fill: ~8K silu_f32
// evaluations per block, one wave of blocks.
constexpr long long kTableMinElements = 1ll << 21;

template <bool kTable>
constexpr int dynamic_smem_bytes() {
  return kRingBytes + (kTable ? kSiluTableEntries * static_cast<int>(sizeof(float)) : 0);
}

// A warp's position in its run: compacted row v (the rows holding tokens, expert by expert), its
// expert e, and the chunk. Warp-uniform.
struct Cursor {
  long long v;
  int e;
  int chunk;
};

// The expert holding compacted row v: the last e with first_row[e] <= v (empty experts share
// their start with the next one).
__device__ __forceinline__ int expert_of(const int* first_row, int experts, long long v) {
  int lo = 0, hi = experts - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (first_row[mid] <= v) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__device__ __forceinline__ void advance(Cursor& c, const ActParams& p, const int* first_row) {
  if (++c.chunk < p.chunks) return;
  c.chunk = 0;
  ++c.v;
  while (c.e + 1 < p.experts && first_row[c.e + 1] <= c.v) ++c.e;
}

// 16 bytes global -> shared, bypassing L1; src_bytes 0 writes zeros and reads nothing.
__device__ __forceinline__ void copy16_async(std::uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void commit_copies() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// Waits until at most kPending of this thread's copy groups are still in flight.
template <int kPending>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// silu_f32 of a bf16 gate (raw bits) through the table (silu_bf16.h).
__device__ __forceinline__ float silu_from_table(const float* table, std::uint32_t bits) {
  const float g = __uint_as_float(bits << 16);
  const int slot = silu_table_slot(static_cast<std::uint16_t>(bits));
  if (slot >= 0) return table[slot];
  if (slot == kSiluHalve) return __fmul_rn(g, 0.5f);
  if (slot == kSiluIdentity) return g;
  return detail::silu_f32(g);
}

// One lane's 8 columns: y = silu(gate) * up in the oracle's fp32 operations.
template <bool kTable>
__device__ __forceinline__ void silu_mul8(const float* table, const uint4& gate, const uint4& up,
                                          float (&y)[8]) {
  float u[8];
  unpack_bf16x8(up, u);
  const std::uint32_t words[4] = {gate.x, gate.y, gate.z, gate.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float s_lo, s_hi;
    if constexpr (kTable) {
      s_lo = silu_from_table(table, words[i] & 0xffffu);
      s_hi = silu_from_table(table, words[i] >> 16);
    } else {
      s_lo = detail::silu_f32(__uint_as_float(words[i] << 16));
      s_hi = detail::silu_f32(__uint_as_float(words[i] & 0xffff0000u));
    }
    y[2 * i] = __fmul_rn(s_lo, u[2 * i]);
    y[2 * i + 1] = __fmul_rn(s_hi, u[2 * i + 1]);
  }
}

// Launch: kThreads threads; dynamic shared memory dynamic_smem_bytes<kTable>(): the per-warp rings
// and the table; static: the row prefixes (E_l + 1 ints each). FP8: a 128-column group is 16
// consecutive lanes of one chunk (I % 128 == 0 and chunks start at multiples of 256 columns), so a
// group's lanes are all active or all idle; idle lanes hold zeros and still join the shuffles.
template <bool kFp8, bool kTable>
__global__ void __launch_bounds__(kThreads) silu_and_mul_kernel(ActParams p) {
  extern __shared__ __align__(16) std::uint8_t dynamic_smem[];
  auto* ring = reinterpret_cast<std::uint8_t(*)[kStages][kStageBytes]>(dynamic_smem);
  auto* table = reinterpret_cast<float*>(dynamic_smem + kRingBytes);
  // first_row[e]: compacted rows before expert e; row_base[e]: its first buffer row (rows < 2^31,
  // checked on the host).
  __shared__ int first_row[kPermuteMaxLocalExperts + 1];
  __shared__ int row_base[kPermuteMaxLocalExperts];
  const bool masked = p.m_max > 0;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if constexpr (kTable) {
    for (int i = threadIdx.x; i < kSiluTableEntries; i += kThreads) {
      table[i] = detail::silu_f32(bf16_bits_to_float(silu_table_gate_bits(i)));
    }
  }
  if (warp == 0) {
    // Lane l scans experts [l * per_lane, (l + 1) * per_lane); a warp scan joins the lanes.
    const int per_lane = (p.experts + 31) / 32;
    const int begin = min(lane * per_lane, p.experts), end = min(begin + per_lane, p.experts);
    auto count = [&](int e) {
      const long long m = max(__ldg(p.masked_m + e), 0);
      return masked ? min(m, p.m_max) : m;
    };
    auto span = [&](long long m) {  // buffer rows of an expert with m rows
      return masked ? p.m_max : (m + kPermuteAlignment - 1) / kPermuteAlignment * kPermuteAlignment;
    };
    long long rows_sum = 0, span_sum = 0;
    for (int e = begin; e < end; ++e) {
      const long long m = count(e);
      rows_sum += m;
      span_sum += span(m);
    }
    long long rows_inclusive = rows_sum, span_inclusive = span_sum;
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
      const long long r = __shfl_up_sync(0xffffffffu, rows_inclusive, offset);
      const long long s = __shfl_up_sync(0xffffffffu, span_inclusive, offset);
      if (lane >= offset) {
        rows_inclusive += r;
        span_inclusive += s;
      }
    }
    long long rows_running = rows_inclusive - rows_sum, span_running = span_inclusive - span_sum;
    for (int e = begin; e < end; ++e) {
      const long long m = count(e);
      first_row[e] = static_cast<int>(rows_running);
      row_base[e] = static_cast<int>(span_running);
      rows_running += m;
      span_running += span(m);
    }
    if (lane == 31) first_row[p.experts] = static_cast<int>(rows_inclusive);
  }
  __syncthreads();

  // This warp's run: chunks [begin, end) of the compacted rows x chunks.
  const long long total = static_cast<long long>(first_row[p.experts]) * p.chunks;
  const long long warps = static_cast<long long>(gridDim.x) * kWarps;
  const long long global_warp = static_cast<long long>(blockIdx.x) * kWarps + warp;
  const long long begin = total * global_warp / warps, end = total * (global_warp + 1) / warps;
  if (begin >= end) return;
  Cursor load{begin / p.chunks, 0, static_cast<int>(begin % p.chunks)};
  load.e = expert_of(first_row, p.experts, load.v);
  Cursor compute = load;
  long long loaded = begin;
  const std::uint32_t ring_base = static_cast<std::uint32_t>(__cvta_generic_to_shared(ring[warp]));

  // Issues the loads of the chunk at `load` into stage `stage` (a commit group, empty past the
  // run's end) and moves `load` on.
  auto issue = [&](int stage) {
    if (loaded < end) {
      const long long row = row_base[load.e] + (load.v - first_row[load.e]);
      const int vec = load.chunk * 32 + lane;
      const bool active = vec < p.vectors && row < p.rows;
      const std::uint16_t* gate =
          active ? p.gate_up + row * 2 * p.inter + static_cast<long long>(vec) * 8 : p.gate_up;
      const std::uint32_t dst = ring_base + stage * kStageBytes + lane * 16;
      copy16_async(dst, gate, active ? 16 : 0);
      copy16_async(dst + 512, active ? gate + p.inter : p.gate_up, active ? 16 : 0);
      advance(load, p, first_row);
      ++loaded;
    }
    commit_copies();
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s);

  for (long long at = begin; at < end; ++at) {
    const int stage = static_cast<int>((at - begin) % kStages);
    issue((stage + kStages - 1) % kStages);
    wait_copies<kStages - 1>();  // this lane's copies of `stage` have landed (it reads only them)
    const std::uint8_t* slot = ring[warp][stage];
    const uint4 gate = *reinterpret_cast<const uint4*>(slot + lane * 16);
    const uint4 up = *reinterpret_cast<const uint4*>(slot + 512 + lane * 16);
    const long long row = row_base[compute.e] + (compute.v - first_row[compute.e]);
    const int vec = compute.chunk * 32 + lane;
    advance(compute, p, first_row);
    if (row >= p.rows) continue;  // counts beyond the buffer: nothing read, nothing written
    float y[8];
    silu_mul8<kTable>(table, gate, up, y);
    const bool active = vec < p.vectors;
    if constexpr (kFp8) {
      float scale;
      std::uint32_t words[2];
      quantize_fp8_group(y, scale, words);  // all lanes: full-mask shuffles
      if (active) {
        auto* out = static_cast<std::uint8_t*>(p.out) + row * p.inter;
        reinterpret_cast<uint2*>(out)[vec] = make_uint2(words[0], words[1]);
        if (lane % 16 == 0) p.out_scale[p.scale_layout.index(row, vec / 16)] = scale;
      }
    } else if (active) {
      auto* out = reinterpret_cast<uint4*>(static_cast<std::uint16_t*>(p.out) + row * p.inter);
      out[vec] = pack_bf16x8(y);
    }
    // The stage is rewritten by the issue two lines down in the next iteration: this lane's reads
    // of it are done (registers), and no other lane reads this lane's bytes.
  }
}

// Blocks that fit on the current device at once, after raising the kernel's shared-memory limit
// there (cached per device, cuda/per_device.h).
template <bool kFp8, bool kTable>
int resident_blocks() {
  static PerDevice<int> cache;
  return cache.get([](int device) {
    int sms = 0, per_sm = 0;
    MOERUN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    MOERUN_CUDA_CHECK(cudaFuncSetAttribute(silu_and_mul_kernel<kFp8, kTable>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           dynamic_smem_bytes<kTable>()));
    MOERUN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &per_sm, silu_and_mul_kernel<kFp8, kTable>, kThreads, dynamic_smem_bytes<kTable>()));
    return sms * std::max(per_sm, 1);
  });
}

template <bool kFp8, bool kTable>
void launch(const ActParams& p, long long rows_upper, cudaStream_t stream) {
  // Enough warps for ~8 chunks each at the upper bound of rows with tokens, at most one wave.
  const long long blocks = std::clamp<long long>(
      ceil_div<long long>(rows_upper * p.chunks, kWarps * 8LL), 1, resident_blocks<kFp8, kTable>());
  silu_and_mul_kernel<kFp8, kTable>
      <<<static_cast<unsigned>(blocks), kThreads, dynamic_smem_bytes<kTable>(), stream>>>(p);
  MOERUN_CUDA_CHECK_LAUNCH();
}

template <bool kFp8>
void launch_path(const ActParams& p, long long rows_upper, cudaStream_t stream) {
  if (rows_upper * p.inter >= kTableMinElements) {
    launch<kFp8, true>(p, rows_upper, stream);
  } else {
    launch<kFp8, false>(p, rows_upper, stream);
  }
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
    detail::check_act_scale(out_scale, "activation out_scale", n_rows, inter / kQuantGroup,
                            rows.layout == Layout::kMasked ? rows.m_max : n_rows,
                            DeviceType::kCuda);
  }
  ActParams p{};
  const std::int64_t experts = rows.masked_m.defined() ? rows.masked_m.numel() : 0;
  check_arg(experts >= 1 && experts <= kPermuteMaxLocalExperts, "masked_m experts",
            "1.." + std::to_string(kPermuteMaxLocalExperts), experts);
  check_tensor(rows.masked_m, "masked_m", DType::kI32, {experts}, DeviceType::kCuda);
  if (rows.layout == Layout::kMasked) {
    check_arg(rows.m_max > 0 && n_rows == experts * rows.m_max, "m_max",
              "rows / experts (" + std::to_string(n_rows) + " / " + std::to_string(experts) + ")",
              rows.m_max);
    p.m_max = rows.m_max;
  }
  p.masked_m = rows.masked_m.data_as<const int>();
  p.experts = static_cast<int>(experts);
  check_arg(reinterpret_cast<std::uintptr_t>(gate_up.data()) % 16 == 0 &&
                reinterpret_cast<std::uintptr_t>(out.data()) % 16 == 0,
            "gate_up/activation out", "16-byte aligned device pointers", "a misaligned pointer");
  check_arg(rows.max_rows_with_tokens >= 0, "max_rows_with_tokens", ">= 0 (0: unknown)",
            rows.max_rows_with_tokens);
  check_arg(n_rows < (std::int64_t{1} << 31), "gate_up rows", "< 2^31", n_rows);
  if (n_rows == 0) return;
  p.gate_up = static_cast<const std::uint16_t*>(gate_up.data());
  p.out = out.data();
  p.out_scale = fp8 ? out_scale.data_as<float>() : nullptr;
  if (fp8)
    p.scale_layout = {rows.layout == Layout::kMasked ? rows.m_max : n_rows, inter / kQuantGroup};
  p.rows = n_rows;
  p.inter = static_cast<int>(inter);
  const std::int64_t rows_upper =
      rows.max_rows_with_tokens > 0 ? std::min(n_rows, rows.max_rows_with_tokens) : n_rows;
  p.vectors = static_cast<int>(inter / 8);
  p.chunks = static_cast<int>(ceil_div<std::int64_t>(p.vectors, 32));
  if (fp8) {
    launch_path<true>(p, rows_upper, stream);
  } else {
    launch_path<false>(p, rows_upper, stream);
  }
}

}  // namespace moerun::cuda
