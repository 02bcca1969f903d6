// Flag kernels: one thread per peer rank.
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "cuda/ep/sync.cuh"

namespace moerun::cuda::ep {

namespace {

__global__ void begin_kernel(int* epoch) { *epoch += 1; }

__global__ void signal_kernel(RankContext c, Phase phase) {
  const int peer = static_cast<int>(threadIdx.x);
  if (peer >= c.num_ranks) return;
  // Everything earlier on the stream happened before this kernel started; the release makes it
  // visible to whoever acquires the flag.
  ::cuda::atomic_ref<int, ::cuda::thread_scope_system> flag(
      *flag_in(c.peers[peer], c, phase, c.rank));
  flag.store(*c.epoch, ::cuda::memory_order_release);
}

__global__ void wait_kernel(RankContext c, Phase phase, int epoch_offset) {
  const int src = static_cast<int>(threadIdx.x);
  if (src < c.num_ranks) wait_flag(c, phase, src, *c.epoch + epoch_offset);
}

}  // namespace

std::string phase_name(Phase phase) {
  switch (phase) {
    case Phase::kCounts:
      return "dispatch counts";
    case Phase::kDispatch:
      return "dispatch";
    case Phase::kCombine:
      return "combine";
    case Phase::kPartial:
      return "standard partials";
    case Phase::kReduced:
      return "standard reduction";
  }
  return "unknown";
}

std::string describe(const DeviceError& e) {
  const std::string phase = phase_name(static_cast<Phase>(e.phase));
  switch (static_cast<ErrorCode>(e.code)) {
    case ErrorCode::kNone:
      return "";
    case ErrorCode::kTimeout:
      return "expert parallelism: rank " + std::to_string(e.rank) + " timed out in the " + phase +
             " phase waiting for rank " + std::to_string(e.peer) + " (its flag was at forward " +
             std::to_string(e.value) + ", expected " + std::to_string(e.expected) + ")";
    case ErrorCode::kCapacity:
      return "expert parallelism: rank " + std::to_string(e.peer) + " would receive " +
             std::to_string(e.value) + " rows in the " + phase + " phase, more than its " +
             std::to_string(e.expected) +
             " (EpOptions::max_recv_rows); nothing was sent to it (seen by rank " +
             std::to_string(e.rank) + ")";
  }
  return "expert parallelism: unknown device error " + std::to_string(e.code);
}

void begin_forward(const RankContext& ctx, cudaStream_t stream) {
  begin_kernel<<<1, 1, 0, stream>>>(ctx.epoch);
  MOERUN_CUDA_CHECK_LAUNCH();
}

void signal_peers(const RankContext& ctx, Phase phase, cudaStream_t stream) {
  signal_kernel<<<1, ctx.num_ranks, 0, stream>>>(ctx, phase);
  MOERUN_CUDA_CHECK_LAUNCH();
}

void wait_peers(const RankContext& ctx, Phase phase, int epoch_offset, cudaStream_t stream) {
  wait_kernel<<<1, ctx.num_ranks, 0, stream>>>(ctx, phase, epoch_offset);
  MOERUN_CUDA_CHECK_LAUNCH();
}

}  // namespace moerun::cuda::ep
