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
// Moving along K inside the 128-byte row, or to another tile, is adding bytes / 16 to the low
// word (the start address field, bits 0-13, holds any address of the 227 KiB window).
// NOTE: the low word is kept apart so that callers offset a warp-uniform value with uniform
// integer adds; rebuilding the full descriptor per thread costs R2UR moves on the wgmma issue path.
__device__ __forceinline__ std::uint32_t sw128_desc_lo(std::uint32_t smem_address) {
  return ((smem_address & 0x3FFFF) >> 4) | (1u << 16);  // start address; LBO (unused) = 1
}
inline constexpr std::uint32_t kSw128DescHi = (1024u >> 4) | (1u << 30);  // SBO; 128-byte swizzle

__device__ __forceinline__ std::uint64_t sw128_desc(std::uint32_t lo) {
  return (static_cast<std::uint64_t>(kSw128DescHi) << 32) | lo;
}

// stmatrix: four 8 x 8 bf16 matrices (each 8 rows of 16 bytes) from the mma fragment layout (lane
// l holds row l / 4, columns 2 (l % 4) .. + 1 of each, one register per matrix) to shared memory;
// lane l gives the address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void stmatrix_x4(std::uint32_t smem_address, std::uint32_t r0,
                                            std::uint32_t r1, std::uint32_t r2, std::uint32_t r3) {
  asm volatile(
      "stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(smem_address),
      "r"(r0), "r"(r1), "r"(r2), "r"(r3)
      : "memory");
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
