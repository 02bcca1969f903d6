// The arguments of a forward (moerun/layer.h): tokens in, the caller's routing, and where an
// engine-API forward runs (stream and workspace).
#pragma once

#include <cstddef>
#include <cstdint>

#include "moerun/tensor.h"

// cudaStream_t is `CUstream_st*` (cuda_runtime_api.h); declared here so that this header needs no
// CUDA headers.
struct CUstream_st;

namespace moerun {

using CudaStream = ::CUstream_st*;

// Device scratch memory of the caller's, for one forward at a time: forwards that may run at the
// same time need one each.
struct Workspace {
  void* data = nullptr;   // on the layer's device, 256-byte aligned (as cudaMalloc returns)
  std::size_t bytes = 0;  // >= Layer::workspace_bytes_for(T)
};

// Where an engine-API forward runs. The CPU backend ignores it.
struct ForwardContext {
  CudaStream stream = nullptr;  // a stream of the layer's device; nullptr = the legacy default one
  Workspace workspace;
};

// The tokens a forward reads: bf16 [T, H]; or, with FP8 weights, tokens the caller already
// quantized: fp8_e4m3 [T, H] with scale [T, H / 128] f32, one per 1x128 group, the recipe moerun
// itself applies (scale = amax / 448, code = e4m3(x * 448 / amax)). Scales must be finite and
// positive (checked on the CPU backend; the CUDA backend reads device memory it cannot check).
struct HiddenStates {
  TensorView data;
  TensorView scale;
  // Implicit: a plain bf16 view is the common input.
  HiddenStates(const TensorView& bf16_data) : data(bf16_data) {}  // NOLINT(google-explicit-*)
  HiddenStates(const TensorView& fp8_data, const TensorView& fp8_scale)
      : data(fp8_data), scale(fp8_scale) {}
  bool prequantized() const { return scale.defined(); }
};

// Which ids a caller's routing holds.
enum class ExpertIds : std::uint8_t {
  // [-1, E): mapped to this rank's experts through config.expert_map (or contiguous placement).
  kGlobal,
  // [-1, E_l): already this rank's local ids, -1 where another rank owns the expert (SGLang's
  // StandardDispatcher under EP).
  kLocal,
};

// Routing done by the caller: a token's ids other than -1 are distinct and weights finite
// (checked on the CPU backend; the CUDA backend cannot check device memory: an out-of-range id is
// skipped and a duplicate never written out of bounds, but its result is unspecified).
struct TopKRouting {
  TensorView topk_ids;      // [T, k] i32
  TensorView topk_weights;  // [T, k] f32
  ExpertIds ids = ExpertIds::kGlobal;
  // Optional, global ids only: an expert_map [E] i32 on the layer's device that replaces the
  // config's placement for this call (vLLM passes its map with every call, and EPLB may rewrite it
  // between calls). Its local ids must be [0, E_l) once each (checked on the CPU backend; on CUDA
  // a local id outside [0, E_l) is skipped).
  TensorView expert_map = {};
};

}  // namespace moerun
