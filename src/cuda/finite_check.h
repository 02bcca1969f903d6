// The finiteness check of a layer's device tensors (LayerOptions::check_finite): one kernel over
// up to kMaxCheckSegments tensors that records, per tensor, its first NaN or infinite element (FP8
// block scales: also zero or negative) in memory the host reads without waiting. No host sync and
// no allocation per check (its scratch state is kFiniteCheckStateBytes of the forward's
// workspace), so a forward's check is captured in a CUDA graph with the rest, and forwards on
// several streams may check at the same time.
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
  kHiddenStatesScale,  // pre-quantized FP8 hidden states' scales (> 0)
};
inline constexpr int kNumCheckedTensors = 9;
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

// What one layer's checks found: per tensor, the first bad element of the checks that completed
// since the last take(), in mapped (zero-copy) pinned host memory that the last block of each
// check updates (and reads over the bus only when it has something to record).
class FiniteCheck {
 public:
  FiniteCheck();  // allocates the host memory
  ~FiniteCheck();
  FiniteCheck(const FiniteCheck&) = delete;
  FiniteCheck& operator=(const FiniteCheck&) = delete;

  // Enqueues one check of `segments` (empty tensors are skipped) on `stream`, with `state`
  // (kFiniteCheckStateBytes of device memory, any content: zeroed on the stream first) as its
  // scratch; returns at once. Checks that may run at the same time need a state each.
  void enqueue(std::span<const CheckSegment> segments, void* state, cudaStream_t stream) const;
  // The first finding recorded by the checks that have completed, in CheckedTensor order (of
  // that tensor, the smallest bad index recorded), and forgets them all; nullopt when there is
  // none. Does not wait: a check still running on the device is seen by a later call. Safe from
  // any thread. (Two checks ending at the same time may each record theirs: one of them stays.)
  std::optional<Finding> take() const;

 private:
  unsigned long long* host_ = nullptr;    // [kNumCheckedTensors], mapped pinned host memory
  unsigned long long* mapped_ = nullptr;  // the same memory, as the device addresses it
};

}  // namespace moerun::cuda
