// Routing kernels of the all-to-all dispatch. Slot positions follow token order (slot t * k + j),
// as the oracle's sequential assignment does:
//   1. count:     per chunk of 256 slots, a histogram over the global experts;
//   2. scan:      per expert, an exclusive scan of its chunk counts; the total goes to every
//                 rank's window (counts[rank][g]);
//   3. positions: per slot, its chunk's offset plus its rank among the chunk's earlier slots of the
//                 same expert (warp match + per-warp counts);
//   4. layout:    one block: waits for every rank's counts, derives the group's layouts;
//   5. m_indices: contiguous only, the local expert of every row of the capacity.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "cuda/block_scan.cuh"
#include "cuda/cuda_check.h"
#include "cuda/ep/route.h"
#include "cuda/ep/sync.cuh"
#include "moerun/errors.h"

namespace moerun::cuda::ep {

namespace {

constexpr int kChunk = 256;
constexpr int kWarps = kChunk / 32;
constexpr int kLayoutThreads = 1024;
constexpr long long kRowAlign = 128;  // the GEMMs' row block: segment padding

std::int64_t num_chunks(std::int64_t slots) {
  return std::max<std::int64_t>(1, ceil_div<std::int64_t>(slots, kChunk));
}

__device__ __forceinline__ int load_id(const int* ids, long long slot, long long slots,
                                       int experts) {
  if (slot >= slots) return -1;
  const int id = ids[slot];
  return id >= 0 && id < experts ? id : -1;
}

// chunk_counts [E, chunks]. Dynamic smem: E ints.
__global__ void __launch_bounds__(kChunk)
    count_kernel(const int* __restrict__ ids, long long slots, int experts,
                 int* __restrict__ chunk_counts) {
  extern __shared__ int histogram[];
  for (int e = threadIdx.x; e < experts; e += kChunk) histogram[e] = 0;
  __syncthreads();
  const int id =
      load_id(ids, static_cast<long long>(blockIdx.x) * kChunk + threadIdx.x, slots, experts);
  if (id >= 0) atomicAdd(&histogram[id], 1);  // a count: the order of increments is irrelevant
  __syncthreads();
  for (int e = threadIdx.x; e < experts; e += kChunk) {
    chunk_counts[static_cast<long long>(e) * gridDim.x + blockIdx.x] = histogram[e];
  }
}

// One block per global expert: chunk_counts[g, :] becomes its exclusive prefix; the total is this
// rank's count of g, written to counts[rank][g] of every window.
__global__ void __launch_bounds__(kChunk)
    scan_kernel(int* __restrict__ chunk_counts, int chunks, RankContext c, std::size_t offset,
                int experts) {
  __shared__ int warp_sums[kWarps];
  const int g = static_cast<int>(blockIdx.x);
  int* counts = chunk_counts + static_cast<long long>(g) * chunks;
  int carry = 0;
  for (int c0 = 0; c0 < chunks; c0 += kChunk) {
    const int i = c0 + static_cast<int>(threadIdx.x);
    const int value = i < chunks ? counts[i] : 0;
    int total = 0;
    const int exclusive = block_exclusive_scan<kChunk>(value, warp_sums, total);
    if (i < chunks) counts[i] = carry + exclusive;
    carry += total;
  }
  for (int peer = threadIdx.x; peer < c.num_ranks; peer += kChunk) {
    int* row = reinterpret_cast<int*>(c.peers[peer] + offset) + c.rank * experts;
    row[g] = carry;
  }
}

// Dynamic smem: kWarps * E ints.
__global__ void __launch_bounds__(kChunk)
    positions_kernel(const int* __restrict__ ids, long long slots, int experts, int chunks,
                     const int* __restrict__ chunk_offsets, int* __restrict__ slot_pos) {
  extern __shared__ int warp_counts[];  // [kWarps, E]
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int i = threadIdx.x; i < kWarps * experts; i += kChunk) warp_counts[i] = 0;
  __syncthreads();
  const long long slot = static_cast<long long>(blockIdx.x) * kChunk + threadIdx.x;
  const int id = load_id(ids, slot, slots, experts);
  // Lanes with the same id see the same mask; the rank is the number of such earlier lanes.
  const unsigned same = __match_any_sync(0xffffffffu, id);
  const int rank = __popc(same & ((1u << lane) - 1u));
  if (id >= 0 && rank == 0) warp_counts[warp * experts + id] = __popc(same);
  __syncthreads();
  if (slot >= slots) return;
  int pos = -1;
  if (id >= 0) {
    pos = chunk_offsets[static_cast<long long>(id) * chunks + blockIdx.x] + rank;
    for (int w = 0; w < warp; ++w) pos += warp_counts[w * experts + id];
  }
  slot_pos[slot] = pos;
}

struct LayoutParams {
  RankContext c;
  PlacementTables p;
  std::size_t counts_offset;
  bool contiguous;
  long long m_max;
  long long capacity;
  LayoutOutputs out;
};

// One block of kLayoutThreads. Static smem: E + E + R ints (E, R <= 1024).
__global__ void __launch_bounds__(kLayoutThreads) layout_kernel(LayoutParams a) {
  __shared__ int total[1024];  // [E] rows each expert receives from all ranks
  __shared__ int start[1024];  // [R * E_l] first row of (rank, local) at that rank
  __shared__ int fits[1024];   // [R] whether the rank can take what it is sent
  __shared__ int ok;
  const RankContext& c = a.c;
  const int experts = a.p.num_experts, local = a.p.local_experts;
  if (threadIdx.x == 0) ok = 1;
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < c.num_ranks &&
      !wait_flag(c, Phase::kCounts, static_cast<int>(threadIdx.x), *c.epoch)) {
    ok = 0;
  }
  __syncthreads();
  if (!ok) {
    // Nothing is sent or computed this forward; the recorded error says why.
    for (int g = threadIdx.x; g < experts; g += kLayoutThreads) a.out.send_base[g] = -1;
    for (int l = threadIdx.x; l < local; l += kLayoutThreads) {
      a.out.masked_m[l] = 0;
      a.out.recv_start[l] = 0;
    }
    if (threadIdx.x == 0) *a.out.m_sum = 0;
    return;
  }
  const int* counts = reinterpret_cast<const int*>(c.window + a.counts_offset);  // [R, E]
  for (int g = threadIdx.x; g < experts; g += kLayoutThreads) {
    int sum = 0;
    for (int s = 0; s < c.num_ranks; ++s) sum += counts[s * experts + g];
    total[g] = sum;
  }
  __syncthreads();
  for (int o = threadIdx.x; o < c.num_ranks; o += kLayoutThreads) {
    long long rows = 0, need = 0;
    for (int l = 0; l < local; ++l) {
      const long long n = total[a.p.global_of[o * local + l]];
      if (a.contiguous) {
        start[o * local + l] = static_cast<int>(min(rows, a.capacity));
        rows += (n + kRowAlign - 1) / kRowAlign * kRowAlign;
        need = rows;
      } else {
        start[o * local + l] = static_cast<int>(l * a.m_max);
        need = max(need, n);
      }
    }
    const long long limit = a.contiguous ? a.capacity : a.m_max;
    fits[o] = need <= limit;
    if (!fits[o]) report(c, ErrorCode::kCapacity, Phase::kDispatch, o, need, limit);
    if (o == c.rank) *a.out.m_sum = a.contiguous && fits[o] ? static_cast<int>(rows) : 0;
  }
  __syncthreads();
  for (int g = threadIdx.x; g < experts; g += kLayoutThreads) {
    const int o = a.p.owner[g], l = a.p.local_id[g];
    int before = 0;
    for (int s = 0; s < c.rank; ++s) before += counts[s * experts + g];
    a.out.send_base[g] = fits[o] ? start[o * local + l] + before : -1;
  }
  for (int l = threadIdx.x; l < local; l += kLayoutThreads) {
    a.out.masked_m[l] = fits[c.rank] ? total[a.p.global_of[c.rank * local + l]] : 0;
    a.out.recv_start[l] = start[c.rank * local + l];
  }
}

// Contiguous: m_indices[row] for every row of the capacity.
__global__ void m_indices_kernel(const int* __restrict__ masked_m,
                                 const int* __restrict__ recv_start, const int* __restrict__ m_sum,
                                 int local, long long capacity, int* __restrict__ m_indices) {
  const long long row = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (row >= capacity) return;
  int e = -1;
  if (row < *m_sum) {
    // The last expert whose segment starts at or before `row` (empty experts share starts).
    int lo = 0, hi = local - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (recv_start[mid] <= row) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    if (recv_start[lo] <= row && row - recv_start[lo] < masked_m[lo]) e = lo;
  }
  m_indices[row] = e;
}

}  // namespace

std::size_t route_scratch_ints(std::int64_t slots, int num_experts) {
  return static_cast<std::size_t>(num_chunks(slots)) * static_cast<std::size_t>(num_experts);
}

void route_slots(const RankContext& ctx, const PlacementTables& placement, const int* topk_ids,
                 std::int64_t slots, std::size_t counts_offset, int* scratch, int* slot_pos,
                 cudaStream_t stream) {
  const int experts = placement.num_experts;
  check_arg(experts >= 1 && experts <= 1024, "num_experts", "1..1024 for expert parallelism",
            experts);
  const int chunks = static_cast<int>(num_chunks(slots));
  const std::size_t hist_smem = static_cast<std::size_t>(experts) * sizeof(int);
  count_kernel<<<chunks, kChunk, hist_smem, stream>>>(topk_ids, slots, experts, scratch);
  MOERUN_CUDA_CHECK_LAUNCH();
  scan_kernel<<<experts, kChunk, 0, stream>>>(scratch, chunks, ctx, counts_offset, experts);
  MOERUN_CUDA_CHECK_LAUNCH();
  if (slots > 0) {
    positions_kernel<<<chunks, kChunk, kWarps * hist_smem, stream>>>(topk_ids, slots, experts,
                                                                     chunks, scratch, slot_pos);
    MOERUN_CUDA_CHECK_LAUNCH();
  }
  signal_peers(ctx, Phase::kCounts, stream);
}

void derive_layout(const RankContext& ctx, const PlacementTables& placement,
                   std::size_t counts_offset, Layout layout, std::int64_t m_max,
                   std::int64_t capacity, const LayoutOutputs& out, cudaStream_t stream) {
  // The layout kernel keeps per-expert and per-rank tables in shared memory.
  check_arg(ctx.num_ranks <= 1024 && placement.num_experts <= 1024, "EP group",
            "at most 1024 ranks and 1024 experts",
            std::to_string(ctx.num_ranks) + " ranks, " + std::to_string(placement.num_experts) +
                " experts");
  const bool contiguous = layout == Layout::kContiguous;
  layout_kernel<<<1, kLayoutThreads, 0, stream>>>(
      {ctx, placement, counts_offset, contiguous, m_max, capacity, out});
  MOERUN_CUDA_CHECK_LAUNCH();
  if (contiguous && capacity > 0) {
    constexpr int kThreads = 256;
    m_indices_kernel<<<static_cast<unsigned>(ceil_div<std::int64_t>(capacity, kThreads)), kThreads,
                       0, stream>>>(out.masked_m, out.recv_start, out.m_sum,
                                    placement.local_experts, capacity, out.m_indices);
    MOERUN_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace moerun::cuda::ep
