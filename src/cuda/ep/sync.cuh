// Device side of cuda/ep/sync.h, for the kernels that wait or signal inline.
#pragma once

#include <cuda/atomic>

#include "cuda/ep/sync.h"

namespace moerun::cuda::ep {

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ bool failed(const RankContext& c) {
  return *reinterpret_cast<volatile const int*>(&c.error->code) != 0;
}

// Keeps the first failure only.
__device__ __forceinline__ void report(const RankContext& c, ErrorCode code, Phase phase, int peer,
                                       long long value, long long expected) {
  if (atomicCAS(&c.error->code, 0, static_cast<int>(code)) != 0) return;
  c.error->phase = static_cast<int>(phase);
  c.error->rank = c.rank;
  c.error->peer = peer;
  c.error->value = value;
  c.error->expected = expected;
  __threadfence();
}

__device__ __forceinline__ int* flag_in(char* window, const RankContext& c, Phase phase, int rank) {
  return reinterpret_cast<int*>(window + c.flags_offset) + static_cast<int>(phase) * c.num_ranks +
         rank;
}

// One thread: waits (bounded) until this window's flag[phase][src] >= target. False on failure
// (this wait timed out, or another already had: then no wait is spent at all).
__device__ __forceinline__ bool wait_flag(const RankContext& c, Phase phase, int src, int target) {
  ::cuda::atomic_ref<int, ::cuda::thread_scope_system> flag(*flag_in(c.window, c, phase, src));
  if (flag.load(::cuda::memory_order_acquire) >= target) return true;
  const unsigned long long start = global_ns();
  for (;;) {
    __nanosleep(128);
    const int seen = flag.load(::cuda::memory_order_acquire);
    if (seen >= target) return true;
    if (failed(c)) return false;
    if (global_ns() - start > c.timeout_ns) {
      report(c, ErrorCode::kTimeout, phase, src, seen, target);
      return false;
    }
  }
}

}  // namespace moerun::cuda::ep
