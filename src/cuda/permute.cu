// Permute kernels. Positions inside an expert follow token order (slot order t * k + j), as the
// oracle's sequential assignment does, without atomics deciding any order:
//   1. count:     per chunk of 256 slots, a histogram over local experts (order-free).
//   2. scan:      per expert, an exclusive scan of its chunk counts -> each chunk's first
//                 position; the total is masked_m[e].
//   3. positions: per chunk, each slot's rank among the chunk's earlier slots of its expert
//                 (warp match + per-warp counts) -> src2dst; contiguous: segment starts (a block
//                 scan of padded counts) and m_indices for every row of the capacity.
//   4. gather:    per token, the row quantized once (FP8 1x128) or copied (BF16, or FP8 the caller
//                 quantized, with its scales) to its k rows.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "core/scale_layout.h"
#include "cuda/block_scan.cuh"
#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/permute.h"
#include "moerun/errors.h"

namespace moerun::cuda {

namespace {

constexpr int kChunk =
    kPermuteChunk;  // slots per chunk = threads of the count and positions kernels
constexpr int kWarps = kChunk / 32;

__device__ __forceinline__ int load_local_id(const int* ids, long long slot, long long slots,
                                             int local_experts) {
  if (slot >= slots) return -1;
  const int id = ids[slot];
  return id >= 0 && id < local_experts ? id : -1;
}

// 1. Launch: one block of kChunk threads per chunk; dynamic smem E_l ints.
// chunk_counts: [E_l, chunks] (expert-major, so that the scan reads it contiguously).
__global__ void __launch_bounds__(kChunk)
    permute_count_kernel(const int* __restrict__ ids, long long slots, int local_experts,
                         int* __restrict__ chunk_counts) {
  extern __shared__ int histogram[];
  for (int e = threadIdx.x; e < local_experts; e += kChunk) histogram[e] = 0;
  __syncthreads();
  const long long slot = static_cast<long long>(blockIdx.x) * kChunk + threadIdx.x;
  const int id = load_local_id(ids, slot, slots, local_experts);
  if (id >= 0) atomicAdd(&histogram[id], 1);  // a count: the order of increments is irrelevant
  __syncthreads();
  for (int e = threadIdx.x; e < local_experts; e += kChunk) {
    chunk_counts[static_cast<long long>(e) * gridDim.x + blockIdx.x] = histogram[e];
  }
}

// 2. Launch: one block of kChunk threads per local expert.
// chunk_counts[e, :] becomes its exclusive prefix; masked_m[e] = the total (masked: at most
// m_max, which only duplicate ids could exceed).
__global__ void __launch_bounds__(kChunk)
    permute_scan_kernel(int* __restrict__ chunk_counts, int chunks, long long m_max,
                        int* __restrict__ masked_m) {
  __shared__ int warp_sums[kWarps];
  int* counts = chunk_counts + static_cast<long long>(blockIdx.x) * chunks;
  int carry = 0;
  for (int c0 = 0; c0 < chunks; c0 += kChunk) {
    const int c = c0 + static_cast<int>(threadIdx.x);
    const int value = c < chunks ? counts[c] : 0;
    int total = 0;
    const int exclusive = block_exclusive_scan<kChunk>(value, warp_sums, total);
    if (c < chunks) counts[c] = carry + exclusive;
    carry += total;
  }
  if (threadIdx.x == 0) {
    masked_m[blockIdx.x] =
        m_max > 0 ? static_cast<int>(min(static_cast<long long>(carry), m_max)) : carry;
  }
}

struct PositionsParams {
  const int* ids;  // [T * k] local ids
  long long slots;
  int local_experts;
  int chunks;
  const int* chunk_offsets;  // [E_l, chunks]
  const int* masked_m;       // [E_l]
  long long m_max;           // masked: rows per expert; 0 = contiguous
  int* src2dst;              // [T * k]
  int* m_indices;            // contiguous: [capacity]
  long long capacity;
  int* m_sum;  // contiguous, optional
};

// 3. Launch: max(chunks, capacity / kChunk) blocks of kChunk threads; dynamic smem
// (kWarps + 1) * E_l ints. Blocks < chunks place their chunk's slots; in the contiguous layout
// every block also fills kChunk rows of m_indices.
__global__ void __launch_bounds__(kChunk) permute_positions_kernel(PositionsParams p) {
  extern __shared__ int smem[];
  int* warp_counts = smem;                       // [kWarps, E_l]
  int* start = smem + kWarps * p.local_experts;  // [E_l] contiguous segment starts
  __shared__ int warp_sums[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const bool contiguous = p.m_max == 0;

  if (contiguous) {
    // Segment starts: exclusive scan of the counts padded to kPermuteAlignment rows.
    int base = 0;
    for (int e0 = 0; e0 < p.local_experts; e0 += kChunk) {
      const int e = e0 + static_cast<int>(threadIdx.x);
      const int count = e < p.local_experts ? p.masked_m[e] : 0;
      const int padded =
          static_cast<int>(ceil_div<long long>(count, kPermuteAlignment) * kPermuteAlignment);
      int total = 0;
      const int exclusive = block_exclusive_scan<kChunk>(padded, warp_sums, total);
      if (e < p.local_experts) start[e] = base + exclusive;
      base += total;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0 && p.m_sum != nullptr) *p.m_sum = base;
    // start[] is read below by every thread (blocks past the chunks skip the slot section and
    // its barriers; racecheck caught the missing one).
    __syncthreads();
  }

  if (static_cast<int>(blockIdx.x) < p.chunks) {
    for (int i = threadIdx.x; i < kWarps * p.local_experts; i += kChunk) warp_counts[i] = 0;
    __syncthreads();
    const long long slot = static_cast<long long>(blockIdx.x) * kChunk + threadIdx.x;
    const int id = load_local_id(p.ids, slot, p.slots, p.local_experts);
    // Lanes holding the same id (including -1) see the same mask; the rank is the number of such
    // lanes below this one, i.e. earlier slots.
    const unsigned same = __match_any_sync(0xffffffffu, id);
    const int rank = __popc(same & ((1u << lane) - 1u));
    if (id >= 0 && rank == 0) warp_counts[warp * p.local_experts + id] = __popc(same);
    __syncthreads();
    if (slot < p.slots) {
      int dst = -1;
      if (id >= 0) {
        long long position =
            p.chunk_offsets[static_cast<long long>(id) * p.chunks + blockIdx.x] + rank;
        for (int w = 0; w < warp; ++w) position += warp_counts[w * p.local_experts + id];
        if (!contiguous) {
          dst = position < p.m_max ? static_cast<int>(id * p.m_max + position) : -1;
        } else {
          dst = static_cast<int>(start[id] + position);
        }
      }
      p.src2dst[slot] = dst;
    }
  }

  if (contiguous) {
    const long long row = static_cast<long long>(blockIdx.x) * kChunk + threadIdx.x;
    if (row < p.capacity) {
      // The segment holding `row`: the last expert whose start is <= row (experts that share a
      // start before it are empty).
      int lo = 0, hi = p.local_experts - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (start[mid] <= row) {
          lo = mid;
        } else {
          hi = mid - 1;
        }
      }
      const bool valid = start[lo] <= row && row - start[lo] < p.masked_m[lo];
      p.m_indices[row] = valid ? lo : -1;
    }
  }
}

struct GatherParams {
  const void* hidden;         // [T, H] bf16, or fp8 e4m3 (pre-quantized)
  const float* hidden_scale;  // pre-quantized only: [T, H / 128]
  const int* src2dst;         // [T, k]
  long long tokens;
  int top_k;
  int hidden_size;
  void* out;                    // [rows, H] fp8 or bf16
  float* scales;                // FP8: MN-major (core/scale_layout.h)
  ActScaleLayout scale_layout;  // FP8: rows per group (M_max or capacity), H / 128
};

constexpr int kGatherThreads = 128;
constexpr int kGatherColumns = kGatherThreads * 8;

// What the gather does with a token row on its way to the permuted rows.
enum class Gather {
  kQuantizeBf16,  // bf16 in, FP8 1x128 out (FP8 weights)
  kCopyBf16,      // bf16 in and out (BF16 weights)
  kCopyFp8,       // pre-quantized fp8 + scales in, copied as they are (FP8 weights)
};

// 4. Launch: grid (ceil(H / 1024), min(T, 65535)), kGatherThreads threads, each 8 columns
// (one 16-byte bf16 or 8-byte fp8 load); tokens stride by gridDim.y. FP8: 16 lanes share a
// 128-column group; lane 0 of the 16 writes its scale.
template <Gather kMode>
__global__ void __launch_bounds__(kGatherThreads) permute_gather_kernel(GatherParams p) {
  const int column = (blockIdx.x * kGatherThreads + threadIdx.x) * 8;
  const bool active = column < p.hidden_size;
  for (long long t = blockIdx.y; t < p.tokens; t += gridDim.y) {
    const int* dst = p.src2dst + t * p.top_k;
    bool any = false;
    for (int j = 0; j < p.top_k; ++j) any |= dst[j] >= 0;
    if (!any) continue;  // uniform over the block
    if constexpr (kMode == Gather::kCopyBf16) {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (active) {
        v = *reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(p.hidden) +
                                            t * p.hidden_size + column);
      }
      for (int j = 0; j < p.top_k; ++j) {
        const int row = dst[j];
        if (row < 0 || !active) continue;
        auto* out =
            static_cast<std::uint16_t*>(p.out) + static_cast<long long>(row) * p.hidden_size;
        *reinterpret_cast<uint4*>(out + column) = v;
      }
    } else {
      uint2 codes = make_uint2(0, 0);
      float scale = 0.0f;
      if constexpr (kMode == Gather::kQuantizeBf16) {
        uint4 v = make_uint4(0, 0, 0, 0);
        if (active) {
          v = *reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(p.hidden) +
                                              t * p.hidden_size + column);
        }
        float x[8];
        unpack_bf16x8(v, x);
        std::uint32_t words[2];
        quantize_fp8_group(x, scale, words);  // all lanes: full-mask shuffles
        codes = make_uint2(words[0], words[1]);
      } else if (active) {
        codes = *reinterpret_cast<const uint2*>(static_cast<const std::uint8_t*>(p.hidden) +
                                                t * p.hidden_size + column);
        // The input's scales are token-major [T, H / 128] (as engines pass them).
        if (threadIdx.x % 16 == 0) scale = p.hidden_scale[t * (p.hidden_size / 128) + column / 128];
      }
      for (int j = 0; j < p.top_k; ++j) {
        const int row = dst[j];
        if (row < 0 || !active) continue;
        auto* out = static_cast<std::uint8_t*>(p.out) + static_cast<long long>(row) * p.hidden_size;
        *reinterpret_cast<uint2*>(out + column) = codes;
        if (threadIdx.x % 16 == 0) p.scales[p.scale_layout.index(row, column / 128)] = scale;
      }
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace

void permute(const HiddenStates& hidden, const TensorView& local_ids, int num_local_experts,
             DType weight_dtype, const PermuteOutputs& out, void* workspace,
             std::size_t workspace_bytes, cudaStream_t stream) {
  check_arg(hidden.data.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.data.ndim());
  const std::int64_t tokens = hidden.data.size(0), h = hidden.data.size(1);
  const bool prequantized = hidden.prequantized();
  check_arg(local_ids.ndim() == 2, "local_ids rank", "2 ([T, k])", local_ids.ndim());
  const std::int64_t k = local_ids.size(1);
  check_tensor(local_ids, "local_ids", DType::kI32, {tokens, k}, DeviceType::kCuda);
  check_arg(num_local_experts >= 1 && num_local_experts <= kPermuteMaxLocalExperts,
            "num_local_experts", "1..." + std::to_string(kPermuteMaxLocalExperts),
            num_local_experts);
  const bool fp8 = weight_dtype == DType::kFP8E4M3;
  check_arg(fp8 || weight_dtype == DType::kBF16, "weight_dtype", "bf16 or fp8_e4m3",
            dtype_name(weight_dtype));
  check_arg(h % (fp8 ? kQuantGroup : 8) == 0, "hidden_size",
            fp8 ? "a multiple of 128 for FP8 weights" : "a multiple of 8", h);
  if (prequantized) {
    check_arg(fp8, "hidden_states dtype", "bf16 (pre-quantized FP8 input needs FP8 weights)",
              dtype_name(hidden.data.dtype()));
    check_tensor(hidden.data, "hidden_states", DType::kFP8E4M3, {tokens, h}, DeviceType::kCuda);
    check_tensor(hidden.scale, "hidden_states scale", DType::kF32, {tokens, h / kQuantGroup},
                 DeviceType::kCuda);
  } else {
    check_tensor(hidden.data, "hidden_states", DType::kBF16, {tokens, h}, DeviceType::kCuda);
  }
  const DType act_dtype = fp8 ? DType::kFP8E4M3 : DType::kBF16;
  const bool masked = out.layout == Layout::kMasked;
  check_tensor(out.masked_m, "masked_m", DType::kI32, {num_local_experts}, DeviceType::kCuda);
  check_tensor(out.src2dst, "src2dst", DType::kI32, {tokens, k}, DeviceType::kCuda);
  std::int64_t m_max = 0, rows = 0;
  if (masked) {
    check_arg(out.tokens.ndim() == 3, "permuted tokens rank", "3 ([E_l, M_max, H])",
              out.tokens.ndim());
    m_max = out.tokens.size(1);
    check_arg(m_max % kPermuteAlignment == 0 && m_max >= tokens && m_max > 0, "M_max",
              "a positive multiple of 128 that is >= T (" + std::to_string(tokens) + ")", m_max);
    check_tensor(out.tokens, "permuted tokens", act_dtype, {num_local_experts, m_max, h},
                 DeviceType::kCuda);
    rows = num_local_experts * m_max;
    if (fp8) {
      check_tensor(out.scales, "permuted scales", DType::kF32,
                   {num_local_experts, h / kQuantGroup, m_max}, DeviceType::kCuda);
    }
  } else {
    check_arg(out.tokens.ndim() == 2, "permuted tokens rank", "2 ([capacity, H])",
              out.tokens.ndim());
    rows = out.tokens.size(0);
    const std::int64_t needed = contiguous_capacity(tokens, k, num_local_experts);
    check_arg(rows >= needed, "contiguous capacity", ">= " + std::to_string(needed), rows);
    check_tensor(out.tokens, "permuted tokens", act_dtype, {rows, h}, DeviceType::kCuda);
    check_tensor(out.m_indices, "m_indices", DType::kI32, {rows}, DeviceType::kCuda);
    if (fp8) {
      check_tensor(out.scales, "permuted scales", DType::kF32, {h / kQuantGroup, rows},
                   DeviceType::kCuda);
    }
    if (out.m_sum.defined()) check_tensor(out.m_sum, "m_sum", DType::kI32, {1}, DeviceType::kCuda);
  }
  check_arg(fp8 || !out.scales.defined(), "permuted scales", "none for BF16 weights",
            "a scale tensor");
  check_arg(rows < (std::int64_t{1} << 31), "permuted rows", "< 2^31", rows);
  check_arg(aligned16(hidden.data.data()) && aligned16(out.tokens.data()), "hidden/permuted tokens",
            "16-byte aligned device pointers", "a misaligned pointer");
  const std::size_t needed_ws = permute_workspace_bytes(tokens, k, num_local_experts);
  check_arg(workspace != nullptr && workspace_bytes >= needed_ws, "permute workspace",
            ">= " + std::to_string(needed_ws) + " bytes", workspace_bytes);

  const long long slots = tokens * k;
  const int chunks = static_cast<int>(permute_chunks(slots));
  auto* chunk_counts = static_cast<int*>(workspace);
  const int* ids = local_ids.data_as<const int>();
  const size_t hist_smem = static_cast<size_t>(num_local_experts) * sizeof(int);
  permute_count_kernel<<<chunks, kChunk, hist_smem, stream>>>(ids, slots, num_local_experts,
                                                              chunk_counts);
  MOERUN_CUDA_CHECK_LAUNCH();
  permute_scan_kernel<<<num_local_experts, kChunk, 0, stream>>>(chunk_counts, chunks, m_max,
                                                                out.masked_m.data_as<int>());
  MOERUN_CUDA_CHECK_LAUNCH();

  PositionsParams pp{};
  pp.ids = ids;
  pp.slots = slots;
  pp.local_experts = num_local_experts;
  pp.chunks = chunks;
  pp.chunk_offsets = chunk_counts;
  pp.masked_m = out.masked_m.data_as<const int>();
  pp.m_max = m_max;
  pp.src2dst = out.src2dst.data_as<int>();
  pp.m_indices = masked ? nullptr : out.m_indices.data_as<int>();
  pp.capacity = masked ? 0 : rows;
  pp.m_sum = !masked && out.m_sum.defined() ? out.m_sum.data_as<int>() : nullptr;
  const long long position_blocks =
      std::max<long long>(chunks, ceil_div<long long>(pp.capacity, kChunk));
  const size_t positions_smem = static_cast<size_t>(kWarps + 1) * hist_smem;
  if (positions_smem > 48 * 1024) {
    MOERUN_CUDA_CHECK(cudaFuncSetAttribute(permute_positions_kernel,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(positions_smem)));
  }
  permute_positions_kernel<<<static_cast<unsigned>(position_blocks), kChunk, positions_smem,
                             stream>>>(pp);
  MOERUN_CUDA_CHECK_LAUNCH();

  if (tokens == 0) return;
  GatherParams gp{};
  gp.hidden = hidden.data.data();
  gp.hidden_scale = prequantized ? hidden.scale.data_as<const float>() : nullptr;
  gp.src2dst = out.src2dst.data_as<const int>();
  gp.tokens = tokens;
  gp.top_k = static_cast<int>(k);
  gp.hidden_size = static_cast<int>(h);
  gp.out = out.tokens.data();
  gp.scales = fp8 ? out.scales.data_as<float>() : nullptr;
  gp.scale_layout = {masked ? m_max : rows, h / kQuantGroup};
  const dim3 grid(static_cast<unsigned>(ceil_div<std::int64_t>(h, kGatherColumns)),
                  static_cast<unsigned>(std::min<std::int64_t>(tokens, 65535)));
  if (prequantized) {
    permute_gather_kernel<Gather::kCopyFp8><<<grid, kGatherThreads, 0, stream>>>(gp);
  } else if (fp8) {
    permute_gather_kernel<Gather::kQuantizeBf16><<<grid, kGatherThreads, 0, stream>>>(gp);
  } else {
    permute_gather_kernel<Gather::kCopyBf16><<<grid, kGatherThreads, 0, stream>>>(gp);
  }
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda
