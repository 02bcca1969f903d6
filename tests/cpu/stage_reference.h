// The layer recomputed token by token from DESIGN.md's stage definitions, with the numerics the
// layer promises: an oracle with the layer's own numerics, so that the two agree bit for bit and
// any change of those numerics (bf16 accumulation in the combine or the SiLU, FP8 activations for
// BF16 weights, a dropped expert) shows up as a difference, however small.
//
// Per token t and slot j, in slot order: skip the slot unless this rank owns topk_ids[t, j] (-1 is
// never owned; local expert 0 is a real expert); the activation row is the token's bf16 row, or
// its FP8 1x128 quantization when the weights are FP8; gate_up = row x w13[e]^T (bf16); act =
// silu(gate) * up in fp32, stored bf16 or re-quantized to FP8; down = act x w2[e]^T (bf16); the
// token's sum += topk_weights[t, j] * down in fp32; stored bf16 or f32 once. No permutation, no
// layout, no masked or contiguous buffers.
//
// Shared with the layer: only the grouped GEMM, called on one row at a time (each output element
// depends on its own row only, and the GEMM is checked against fp64 on its own), the FP8 row
// quantization (cpu/quant.h, checked on its own) and the rounding functions.
#pragma once

#include "moerun/config.h"
#include "moerun/host_tensor.h"
#include "moerun/weights.h"

namespace moerun::test {

// hidden [T, H] bf16, topk_ids [T, k] global ids, topk_weights [T, k] f32; `local_weights` hold
// the E_l experts of config.ep_rank. Returns out [T, H] in `out_dtype` (bf16, or f32 partials).
HostTensor stage_reference(const MoeConfig& config, const MoeWeights& local_weights,
                           const TensorView& hidden, const TensorView& topk_ids,
                           const TensorView& topk_weights, DType out_dtype = DType::kBF16);

}  // namespace moerun::test
