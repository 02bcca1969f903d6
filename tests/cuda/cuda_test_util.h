// Helpers of the CUDA tests: GPU detection (skip with the reason printed), owning device tensors
// (poisoned on allocation), fresh seeds, and host-side comparisons.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "core/scale_layout.h"
#include "core/synthetic.h"
#include "cuda/cuda_check.h"
#include "cuda/runtime.h"
#include "moerun/host_tensor.h"
#include "moerun/weights.h"

namespace moerun::test {

// Skips the calling test, printing why, unless a device that can run the kernels is visible.
#define MOERUN_REQUIRE_GPU()                                                         \
  do {                                                                               \
    const std::string moerun_reason_ = ::moerun::cuda::device_unavailable_reason();  \
    if (!moerun_reason_.empty()) {                                                   \
      std::cout << "[  SKIPPED ] no usable CUDA device: " << moerun_reason_ << "\n"; \
      GTEST_SKIP() << "no usable CUDA device: " << moerun_reason_;                   \
    }                                                                                \
  } while (0)

// Every byte 0xFF: NaN for bf16/f32/fp8, -1 for i32. Outputs start poisoned, so an element a
// kernel forgot to write can never pass a comparison.
inline constexpr int kPoison = 0xFF;

// An owning buffer on the current device with a TensorView over it; starts poisoned.
class DeviceTensor {
 public:
  DeviceTensor() = default;
  DeviceTensor(DType dtype, const Shape& shape) {
    const TensorView sized(nullptr, dtype, shape);
    bytes_ = sized.nbytes();
    MOERUN_CUDA_CHECK(cudaMalloc(&data_, bytes_ > 0 ? bytes_ : 1));
    view_ = TensorView(data_, dtype, shape, {DeviceType::kCuda, cuda::current_device()});
    poison();
  }
  ~DeviceTensor() {
    if (data_ != nullptr) cudaFree(data_);
  }
  DeviceTensor(DeviceTensor&& other) noexcept { *this = std::move(other); }
  DeviceTensor& operator=(DeviceTensor&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    std::swap(view_, other.view_);
    return *this;
  }

  static DeviceTensor from_host(const TensorView& host) {
    if (!host.defined()) return {};
    DeviceTensor t(host.dtype(), host.shape());
    if (t.bytes_ > 0) t.copy_from(host);
    return t;
  }
  // Waits for all device work, then copies back.
  HostTensor to_host() const {
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
    HostTensor h(view_.dtype(), view_.shape());
    if (bytes_ > 0)
      MOERUN_CUDA_CHECK(cudaMemcpy(h.view().data(), data_, bytes_, cudaMemcpyDeviceToHost));
    return h;
  }
  // Copies and poisoning run on the legacy default stream; the synchronization makes them
  // complete before work on any other stream (a graph replay, say) can read the buffer.
  void copy_from(const TensorView& host) {
    MOERUN_CUDA_CHECK(cudaMemcpy(data_, host.data(), bytes_, cudaMemcpyHostToDevice));
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  }
  void poison() {
    if (bytes_ > 0) MOERUN_CUDA_CHECK(cudaMemset(data_, kPoison, bytes_));
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  }
  const TensorView& view() const { return view_; }
  // The same memory seen with another shape (same element count or fewer).
  TensorView reshaped(const Shape& shape) const {
    return TensorView(data_, view_.dtype(), shape, view_.device());
  }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
  TensorView view_;
};

// Device copies of a layer's weights.
struct DeviceWeights {
  DeviceTensor w13, w13_scale, w2, w2_scale, correction_bias;
  explicit DeviceWeights(const MoeWeights& host)
      : w13(DeviceTensor::from_host(host.w13)),
        w13_scale(DeviceTensor::from_host(host.w13_scale)),
        w2(DeviceTensor::from_host(host.w2)),
        w2_scale(DeviceTensor::from_host(host.w2_scale)),
        correction_bias(DeviceTensor::from_host(host.correction_bias)) {}
  MoeWeights view() const {
    return {w13.view(), w13_scale.view(), w2.view(), w2_scale.view(), correction_bias.view()};
  }
};

// A fresh seed per call (std::random_device), printed so that a failure can be reproduced with
// MOERUN_TEST_SEED=<seed>.
inline std::uint64_t fresh_seed() {
  std::uint64_t seed;
  if (const char* fixed = std::getenv("MOERUN_TEST_SEED")) {
    seed = std::strtoull(fixed, nullptr, 10);
  } else {
    std::random_device rd;
    seed = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }
  std::cout << "[   SEED   ] " << seed << "\n";
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

// Bytes of element `index` of a host tensor.
inline const std::uint8_t* element_bytes(const HostTensor& t, std::int64_t index) {
  return static_cast<const std::uint8_t*>(t.view().data()) +
         static_cast<std::size_t>(index) * dtype_size(t.dtype());
}

// Whether rows [row, row + 1) of two [rows, cols] host tensors hold the same bytes.
inline bool same_row(const HostTensor& a, const HostTensor& b, std::int64_t row,
                     std::int64_t cols) {
  const std::size_t bytes = static_cast<std::size_t>(cols) * dtype_size(a.dtype());
  return std::memcmp(element_bytes(a, row * cols), element_bytes(b, row * cols), bytes) == 0;
}

// Whether a row of a host tensor is still all poison bytes (never written).
inline bool row_poisoned(const HostTensor& a, std::int64_t row, std::int64_t cols) {
  const std::size_t bytes = static_cast<std::size_t>(cols) * dtype_size(a.dtype());
  const std::uint8_t* p = element_bytes(a, row * cols);
  for (std::size_t i = 0; i < bytes; ++i) {
    if (p[i] != kPoison) return false;
  }
  return true;
}

// The same for the row's FP8 activation scales, MN-major (core/scale_layout.h).
// The two tensors may group their rows differently (a contiguous buffer's capacity vs M_sum).
inline bool same_scale_row(const HostTensor& a, const ActScaleLayout& layout_a, const HostTensor& b,
                           const ActScaleLayout& layout_b, std::int64_t row) {
  for (std::int64_t kb = 0; kb < layout_a.k_blocks; ++kb) {
    if (std::memcmp(element_bytes(a, layout_a.index(row, kb)),
                    element_bytes(b, layout_b.index(row, kb)), sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}
inline bool scale_row_poisoned(const HostTensor& a, const ActScaleLayout& layout,
                               std::int64_t row) {
  for (std::int64_t kb = 0; kb < layout.k_blocks; ++kb) {
    const std::uint8_t* p = element_bytes(a, layout.index(row, kb));
    for (std::size_t i = 0; i < sizeof(float); ++i) {
      if (p[i] != kPoison) return false;
    }
  }
  return true;
}

// Random local ids [T, k] in [-1, E_l): each token's non-negative ids distinct; a slot is -1 with
// probability `skip`.
inline HostTensor random_local_ids(std::int64_t tokens, int k, int experts, double skip,
                                   std::uint64_t seed) {
  HostTensor ids(DType::kI32, {tokens, k});
  std::mt19937_64 rng(seed);
  std::vector<int> perm(static_cast<std::size_t>(experts));
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int e = 0; e < experts; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int j = 0; j < k; ++j) {
      const bool skipped = j >= experts || std::uniform_real_distribution<>(0, 1)(rng) < skip;
      ids.data<int>()[t * k + j] = skipped ? -1 : perm[j];
    }
  }
  return ids;
}

// Whether two floats are equal or one float ulp apart.
inline bool within_one_ulp(float a, float b) {
  return a == b || std::nextafter(a, INFINITY) == b || std::nextafter(a, -INFINITY) == b;
}

}  // namespace moerun::test
