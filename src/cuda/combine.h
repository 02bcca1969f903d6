// CUDA stage 7: the weighted combine (DESIGN.md stage 7; oracle cpu/combine.h). Bit-exact with the
// oracle given the same `down`: the same fp32 products and sums in slot order, no atomics.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "moerun/tensor.h"

namespace moerun::cuda {

// The consumer side of single-batch overlap: before reading row r = e * m_max + i of `down`, wait
// (acquire) until counters[e * ceil(m_max / block_m) + i / block_m] >= threshold. A producer that
// never gets there is a bug: the wait gives up after ~seconds and traps (no silent hang).
struct CombineWait {
  TensorView counters;  // [E_l * ceil(m_max / block_m)] i32 (device)
  std::int64_t m_max = 0;
  int block_m = 0;
  int threshold = 0;
};

// out[t] = output_scale * (sum over slots j with src2dst[t, j] >= 0 of topk_weights[t, j] *
// down[src2dst[t, j]]), fp32 in slot order, then the scale, stored once: bf16, or f32 (an EP
// partial). down [rows, H] bf16 (leading
// dims flatten), src2dst and topk_weights [T, k], out [T, H]; all on the device. A token with no
// local slot gets zeros. Launch: grid (ceil(H / 1024), min(T, 65535)), 128 threads x 8 columns.
void combine(const TensorView& down, const TensorView& src2dst, const TensorView& topk_weights,
             const TensorView& out, float output_scale, const CombineWait* wait,
             cudaStream_t stream);

}  // namespace moerun::cuda
