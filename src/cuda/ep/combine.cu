// Combine send kernels: one row block (64 rows of one expert) at a time per CTA, 128 threads
// copying 16 bytes each per pass through the peer table.
#include <cuda_runtime.h>

#include <algorithm>
#include <cuda/atomic>

#include "cuda/cuda_check.h"
#include "cuda/ep/combine.h"
#include "cuda/ep/sync.cuh"

namespace moerun::cuda::ep {

namespace {

constexpr int kThreads = 128;

enum class Mode : int { kAll, kOverlap, kFinish };

struct Params {
  RankContext c;
  CombineSendArgs a;
  unsigned long long patience_ns;
};

__host__ __device__ __forceinline__ long long num_blocks(const CombineSendArgs& a) {
  return a.layout == Layout::kMasked
             ? static_cast<long long>(a.local_experts) * (a.m_max / kCombineBlockRows)
             : a.capacity / kCombineBlockRows;
}

// Rows [begin, end) of block b that can hold tokens (masked: those below masked_m; contiguous:
// those below m_sum, each checked against m_indices).
__device__ __forceinline__ void block_rows(const CombineSendArgs& a, long long b, long long& begin,
                                           long long& end) {
  if (a.layout == Layout::kMasked) {
    const long long per_expert = a.m_max / kCombineBlockRows;
    const long long e = b / per_expert, first = (b % per_expert) * kCombineBlockRows;
    begin = e * a.m_max + first;
    end = e * a.m_max + min(static_cast<long long>(a.masked_m[e]), first + kCombineBlockRows);
  } else {
    begin = b * kCombineBlockRows;
    end = min(static_cast<long long>(*a.m_sum), begin + kCombineBlockRows);
  }
}

__device__ void send_rows(const RankContext& c, const CombineSendArgs& a, long long begin,
                          long long end) {
  const int vectors = a.hidden_size / 8;  // 16-byte pieces per row
  const long long count = (end - begin) * vectors;
  for (long long i = threadIdx.x; i < count; i += kThreads) {
    const long long row = begin + i / vectors;
    if (a.layout == Layout::kContiguous && a.m_indices[row] < 0) continue;  // padding
    const int packed = a.origin[row];
    const long long src = packed / a.slot_stride, slot = packed % a.slot_stride;
    const long long column = (i % vectors) * 8;
    const uint4 v = *reinterpret_cast<const uint4*>(a.down + row * a.hidden_size + column);
    auto* out = reinterpret_cast<std::uint16_t*>(c.peers[src] + a.return_offset);
    *reinterpret_cast<uint4*>(out + slot * a.hidden_size + column) = v;
  }
}

template <Mode kMode>
__global__ void __launch_bounds__(kThreads) send_kernel(Params q) {
  const CombineSendArgs& a = q.a;
  __shared__ int go;
  const long long blocks = num_blocks(a);
  for (long long b = blockIdx.x; b < blocks; b += gridDim.x) {
    long long begin, end;
    block_rows(a, b, begin, end);
    if (begin >= end) continue;  // no token here (uniform over the block)
    if constexpr (kMode != Mode::kAll) {
      if (threadIdx.x == 0) {
        ::cuda::atomic_ref<int, ::cuda::thread_scope_device> counter(a.counters[b]);
        if constexpr (kMode == Mode::kOverlap) {
          // The GEMM adds its tiles' counts with release; this acquire orders the reads below.
          // Patience restarts whenever the block's count moves (its tiles are being stored).
          go = 1;
          unsigned long long since = global_ns();
          int seen = counter.load(::cuda::memory_order_acquire);
          while (seen < a.threshold) {
            __nanosleep(64);
            const int now = counter.load(::cuda::memory_order_acquire);
            if (now != seen) {
              seen = now;
              since = global_ns();
            } else if (global_ns() - since > q.patience_ns) {
              go = 0;
              break;
            }
          }
          // Marks the block sent for the finishing pass (nothing else writes it after the GEMM).
          if (go) counter.store(a.threshold + 1, ::cuda::memory_order_relaxed);
        } else {
          go = counter.load(::cuda::memory_order_relaxed) != a.threshold + 1;
        }
      }
      __syncthreads();
      if (!go) {
        if constexpr (kMode == Mode::kOverlap) {
          // Everything this CTA has left goes to the finishing pass.
          if (threadIdx.x == 0) atomicAdd(a.gave_up, 1);
          return;
        } else {
          continue;
        }
      }
    }
    send_rows(q.c, a, begin, end);
    if constexpr (kMode != Mode::kAll) __syncthreads();  // `go` is rewritten for the next block
  }
}

template <Mode kMode>
void launch(const RankContext& ctx, const CombineSendArgs& args, std::uint64_t patience_ns,
            int ctas, cudaStream_t stream) {
  send_kernel<kMode><<<ctas, kThreads, 0, stream>>>(Params{ctx, args, patience_ns});
  MOERUN_CUDA_CHECK_LAUNCH();
}

int all_ctas(const CombineSendArgs& a) {
  return static_cast<int>(std::clamp<long long>(num_blocks(a), 1, 4096));
}

}  // namespace

void send_results(const RankContext& ctx, const CombineSendArgs& args, cudaStream_t stream) {
  if (num_blocks(args) > 0) launch<Mode::kAll>(ctx, args, 0, all_ctas(args), stream);
  signal_peers(ctx, Phase::kCombine, stream);
}

void send_results_overlapped(const RankContext& ctx, const CombineSendArgs& args,
                             std::uint64_t patience_ns, cudaStream_t stream) {
  if (num_blocks(args) > 0) launch<Mode::kOverlap>(ctx, args, patience_ns, kOverlapCtas, stream);
}

void finish_sending_results(const RankContext& ctx, const CombineSendArgs& args,
                            cudaStream_t stream) {
  if (num_blocks(args) > 0) launch<Mode::kFinish>(ctx, args, 0, all_ctas(args), stream);
  signal_peers(ctx, Phase::kCombine, stream);
}

}  // namespace moerun::cuda::ep
