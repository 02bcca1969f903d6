// Owning device buffers for the tools (moerun run on the CUDA backend, moerun bench) and the
// layer's construction-time allocations: uploads of host tensors and weights, downloads, and
// seeded random contents generated on the device. The layer itself never allocates per forward;
// these are for whoever owns the tensors it views.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "moerun/config.h"
#include "moerun/host_tensor.h"
#include "moerun/tensor.h"
#include "moerun/weights.h"

namespace moerun::cuda {

// One cudaMalloc with a contiguous TensorView over it; freed on destruction. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Uninitialized memory for `shape` elements of `dtype`, on the current device.
  DeviceBuffer(DType dtype, const Shape& shape);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // A device copy of a contiguous host view (synchronous); an undefined view gives an empty buffer.
  static DeviceBuffer upload(const TensorView& host);
  // Waits for the device, then copies the whole buffer back.
  HostTensor download() const;

  const TensorView& view() const { return view_; }
  bool defined() const { return view_.defined(); }

 private:
  void* data_ = nullptr;
  TensorView view_;
};

// Device copies of a layer's weights, and views of them.
struct DeviceMoeWeights {
  DeviceBuffer w13, w13_scale, w2, w2_scale, correction_bias;
  MoeWeights view() const;
};

// Uploads every defined tensor of `host` (host views, contiguous).
DeviceMoeWeights upload_weights(const MoeWeights& host);

// Seeded random contents written by a kernel on `stream` (a pure function of seed and index):
//   fp8_e4m3: random codes, never NaN; bf16 and f32: uniform in [-scale, scale].
void fill_random(const TensorView& tensor, std::uint64_t seed, float scale, cudaStream_t stream);
// f32 only: uniform in [scale / 2, scale] (FP8 block scales, positive).
void fill_random_positive(const TensorView& tensor, std::uint64_t seed, float scale,
                          cudaStream_t stream);

// Random weights of `num_experts` experts of `config`'s shapes and dtype, generated on the device
// (seconds for DeepSeek-V3's 11 GB, where the host generator takes minutes). Products come out
// O(1) as with random_weights(). The correction bias (grouped routing) has E entries, small
// enough (+-1e-4) to leave the routing balanced.
DeviceMoeWeights random_device_weights(const MoeConfig& config, int num_experts, std::uint64_t seed,
                                       cudaStream_t stream);

}  // namespace moerun::cuda
