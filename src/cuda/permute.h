// CUDA stage 3: permute + quantize tokens into the masked or contiguous layout (DESIGN.md stage 3;
// oracle cpu/permute.h). The layouts, and every written value, equal the oracle's bit for bit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/permute_shape.h"  // kPermuteAlignment, contiguous_capacity, workspace bytes
#include "moerun/config.h"
#include "moerun/forward.h"
#include "moerun/tensor.h"

namespace moerun::cuda {

// Where permute writes; all device views, preallocated by the caller.
struct PermuteOutputs {
  Layout layout = Layout::kMasked;
  // masked [E_l, M_max, H]; contiguous [capacity, H] (capacity >= contiguous_capacity(T, k, E_l)).
  // fp8_e4m3 for FP8 weights, bf16 otherwise. Rows past masked_m[e] (masked) and padding rows
  // (contiguous) are never written.
  TensorView tokens;
  // FP8 only, f32, MN-major (core/scale_layout.h): [E_l, H / 128, M_max] or [H / 128, capacity].
  TensorView scales;
  TensorView masked_m;   // [E_l] i32: valid rows per expert (both layouts)
  TensorView m_indices;  // contiguous only: [capacity] i32, expert of each row; -1 for padding
                         // and for every row at or past M_sum
  TensorView m_sum;      // contiguous only, optional: [1] i32, rows including padding
  TensorView src2dst;    // [T, k] i32: row of each (token, slot), -1 when skipped
};

// hidden [T, H] (bf16; or, FP8 weights only, pre-quantized fp8_e4m3 with its [T, H / 128] f32
// scales, copied as they are) and local_ids [T, k] i32 in [-1, E_l) (device) -> `out`.
// The ids must be distinct per token (as the oracle checks); this is not validated on the
// device. An id outside [-1, E_l), or a masked row that would land at or past M_max (only
// possible with duplicate ids), is skipped (src2dst -1) rather than written out of bounds.
// Launch sequence: 3 small kernels (count, scan, positions) + the gather; grid sizes depend on T
// and the capacity only, never on the routing, so the whole stage is CUDA-graph capturable.
void permute(const HiddenStates& hidden, const TensorView& local_ids, int num_local_experts,
             DType weight_dtype, const PermuteOutputs& out, void* workspace,
             std::size_t workspace_bytes, cudaStream_t stream);

}  // namespace moerun::cuda
