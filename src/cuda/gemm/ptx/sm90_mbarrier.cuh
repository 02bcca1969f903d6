// mbarrier wrappers (sm_90): the transaction-counting barriers in shared memory that the GEMM's
// pipeline stages complete on. Addresses are 32-bit shared-window addresses.
#pragma once

#include <cstdint>

namespace moerun::cuda::sm90 {

__device__ __forceinline__ std::uint32_t smem_addr(const void* ptr) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(ptr));
}

__device__ __forceinline__ void mbarrier_init(std::uint64_t* bar, std::uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(arrivals)
               : "memory");
}

// NOTE: makes the initialized barriers visible to the async proxy (TMA completes on them).
__device__ __forceinline__ void mbarrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// The waits and arrivals take the barrier's shared-window address (32 bits: one register where a
// generic pointer takes two, which matters to the 40-register producer) or a pointer.
__device__ __forceinline__ void mbarrier_arrive(std::uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) {
  mbarrier_arrive(smem_addr(bar));
}

// One arrival that also expects `bytes` of asynchronous transactions (the TMA loads of a stage).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint32_t bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}

// Waits until the phase with parity `parity` has completed. A fresh barrier counts as having
// completed the phase of parity 1, which is how a producer's first pass over empty stages goes
// through without waiting.
__device__ __forceinline__ void mbarrier_wait(std::uint32_t bar, std::uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_again:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_again;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, std::uint32_t parity) {
  mbarrier_wait(smem_addr(bar), parity);
}

}  // namespace moerun::cuda::sm90
