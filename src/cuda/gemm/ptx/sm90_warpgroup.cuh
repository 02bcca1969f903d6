// Warpgroup-level wrappers (sm_90a): wgmma fences and groups, shared-memory matrix descriptors,
// register reallocation between warpgroups (setmaxnreg) and named barriers.
#pragma once

#include <cstdint>

namespace moerun::cuda::sm90 {

// Orders earlier register/shared-memory accesses of the warpgroup before the next wgmma.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}

__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}

// Waits until at most `kPending` committed wgmma groups are still running.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  static_assert(kPending >= 0 && kPending <= 7, "wgmma.wait_group takes 0..7");
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(kPending) : "memory");
}

// NOTE: keeps the compiler from moving accesses of accumulator registers across the asynchronous
// wgmma/wait statements (the asm "writes" the register, so later reads depend on it).
template <int kCount>
__device__ __forceinline__ void fence_operands(float (&regs)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(regs[i])::"memory");
}

// Descriptor of a K-major operand tile in shared memory written by TMA with 128-byte swizzling:
// rows of 128 bytes, 8-row core groups 1024 bytes apart (SBO), leading offset unused for this
// layout; the tile must start 1024-byte aligned (the swizzle pattern is taken from address bits).
// Moving along K inside the 128-byte row is adding bytes / 16 to the start address field.
__device__ __forceinline__ std::uint64_t make_sw128_desc(std::uint32_t smem_address) {
  std::uint64_t desc = 0;
  desc |= static_cast<std::uint64_t>((smem_address & 0x3FFFF) >> 4);  // start address, bits 0-13
  desc |= static_cast<std::uint64_t>(1) << 16;                        // LBO (unused), bits 16-29
  desc |= static_cast<std::uint64_t>(1024 >> 4) << 32;                // SBO, bits 32-45
  desc |= static_cast<std::uint64_t>(1) << 62;                        // layout: 128-byte swizzle
  return desc;
}

template <int kRegs>
__device__ __forceinline__ void warpgroup_reg_alloc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(kRegs));
}

template <int kRegs>
__device__ __forceinline__ void warpgroup_reg_dealloc() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(kRegs));
}

// Barrier `id` (1..15; 0 is __syncthreads) among `threads` threads (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace moerun::cuda::sm90
