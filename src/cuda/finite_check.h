// The finiteness check of a layer's device tensors (LayerOptions::check_finite): one kernel over
// up to kMaxCheckSegments tensors that records, per tensor, its first NaN or infinite element (FP8
// block scales: also zero or negative) in memory the host reads without waiting. No host sync and
// no allocation per check, so a forward's check is captured in a CUDA graph with the rest.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "moerun/tensor.h"

namespace moerun::cuda {

// The tensors a finding can belong to, in the order they are reported: the hidden states before
// the router logits, so that a NaN the caller put in the hidden states is named there.
enum class CheckedTensor : std::uint8_t {
  kHiddenStates,
  kRouterLogits,
  kTopkWeights,
  kW13,
  kW13Scale,
  kW2,
  kW2Scale,
  kCorrectionBias,
};
inline constexpr int kNumCheckedTensors = 8;
std::string_view checked_tensor_name(CheckedTensor tensor);

// What is wrong with the element found.
enum class BadValue : std::uint8_t { kNan, kPositiveInfinity, kNegativeInfinity, kNotPositive };
std::string_view bad_value_text(BadValue value);  // "nan", "inf", "-inf", "<= 0"

struct CheckSegment {
  TensorView view;  // device; bf16, f32 or fp8_e4m3
  CheckedTensor tensor;
  bool scale = false;  // f32 FP8 block scales: must also be > 0
};
inline constexpr int kMaxCheckSegments = 5;

struct Finding {
  CheckedTensor tensor;
  std::int64_t index;  // flat, the first bad element of that tensor
  BadValue value;
};

// The device state of the checks of one layer: per tensor the first bad element found since the
// last take(), kept in mapped (zero-copy) host memory that the last block of each check updates.
class FiniteCheck {
 public:
  FiniteCheck();  // allocates (and waits once, to zero the device state)
  ~FiniteCheck();
  FiniteCheck(const FiniteCheck&) = delete;
  FiniteCheck& operator=(const FiniteCheck&) = delete;

  // Enqueues one check of `segments` (empty tensors are skipped) on `stream`; returns at once.
  void enqueue(std::span<const CheckSegment> segments, cudaStream_t stream);
  // The first finding recorded by the checks that have completed, in CheckedTensor order (the
  // smallest bad index of that tensor), and forgets them all; nullopt when there is none. Does not
  // wait: a check still running on the device is seen by a later call.
  std::optional<Finding> take();

 private:
  unsigned long long* host_ = nullptr;    // [kNumCheckedTensors], mapped pinned host memory
  unsigned long long* mapped_ = nullptr;  // the same memory, as the device addresses it
  unsigned long long* device_ = nullptr;  // [kNumCheckedTensors] per-launch minima + block count
};

}  // namespace moerun::cuda
