// moerun::Layer: one MoE layer, built once from a config and weights, run many times.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "moerun/config.h"
#include "moerun/tensor.h"
#include "moerun/weights.h"

namespace moerun {

enum class Backend : std::uint8_t { kAuto, kCpu, kCuda };
std::string_view backend_name(Backend backend);
// Whether this build has the CUDA backend and a CUDA device is visible.
bool cuda_available();

enum class LayoutChoice : std::uint8_t { kAuto, kMasked, kContiguous };

struct LayerOptions {
  // auto: CUDA when cuda_available() and the weights are device tensors, else CPU.
  Backend backend = Backend::kAuto;
  LayoutChoice layout = LayoutChoice::kAuto;
  // Tokens per forward at most; 0 = no limit (workspace grows on demand, CPU backend only). The
  // CUDA backend needs a limit: it allocates its whole workspace at construction.
  std::int64_t max_tokens = 0;
  // Single-batch overlap in the masked layout (the result is bitwise the same without it).
  bool overlap = false;
  // CUDA: the most device memory the layer's workspace (allocated once, for max_tokens) may take;
  // 0 = no limit. With layout auto, the masked layout is dropped when it does not fit; a layout
  // that cannot fit at all is rejected at construction. CPU: ignored.
  std::size_t workspace_limit_bytes = 0;
  // Reject non-finite values where the caller's data enters the layer, naming the tensor and its
  // first bad element ("invalid hidden_states[3, 17]: expected a finite value, got nan"): the
  // weights at construction (w13, w2; FP8 block scales must also be > 0; correction_bias), and at
  // every forward hidden_states, then router_logits (forward) or topk_weights (forward_routed), in
  // that order, so that a NaN in the hidden states is never reported as one of the logits. One
  // read of each tensor; off for speed. Finite inputs can still overflow inside the layer: the
  // output is not checked.
  //   CPU: the forward throws. (The oracle rejects non-finite logits and topk_weights even when
  //   this is off: its sort needs an order.)
  //   CUDA: the weights are checked at construction (which waits for the device). A forward's
  //   check is a kernel on the forward's stream, so it never waits and can be captured in a CUDA
  //   graph; what it finds is reported later, on the host, by the first of: the next forward or
  //   forward_routed call on this layer made after the check ran, or report_pending_errors().
  bool check_finite = true;
};

class Layer {
 public:
  // `weights` hold this rank's E_l experts (config.ep_rank) on the backend's device; they must
  // outlive the layer (the layer keeps views, not copies).
  Layer(const MoeConfig& config, const MoeWeights& weights, const LayerOptions& options = {});
  ~Layer();
  Layer(Layer&&) noexcept;
  Layer& operator=(Layer&&) noexcept;

  const MoeConfig& config() const;
  Backend backend() const;
  // The layout a forward of `tokens` tokens uses.
  Layout layout_for(std::int64_t tokens) const;

  // hidden [T, H] bf16 and router_logits [T, E] f32 -> out [T, H] (bf16, or f32 for an EP partial).
  void forward(const TensorView& hidden, const TensorView& router_logits, const TensorView& out);
  // With routing done by the caller: topk_ids [T, k] i32 global ids in [-1, E), topk_weights [T,
  // k].
  void forward_routed(const TensorView& hidden, const TensorView& topk_ids,
                      const TensorView& topk_weights, const TensorView& out);

  // CUDA backend. Every tensor of a forward lives on the device; forwards are enqueued on the
  // stream set here (a cudaStream_t; nullptr = the default stream) and return without
  // synchronizing. Ids are not validated on the device (the caller guarantees [-1, E) and distinct
  // ids per token). The launch sequence depends on T only, so a forward can be captured in a CUDA
  // graph and replayed with new inputs. CPU backend: the stream is ignored.
  void set_stream(void* stream);
  // Device bytes the layer allocated at construction (0 on the CPU backend).
  std::size_t workspace_bytes() const;
  // CUDA backend: throws (once) the error the device-side finiteness check of an earlier forward
  // recorded (LayerOptions::check_finite), naming the tensor and its first bad element over every
  // forward since the last report. It does not wait for the device: call it after synchronizing
  // the stream (cudaStreamSynchronize, an event, a blocking copy of the output) to be sure that
  // the checks of every forward enqueued before have run; a graph replay's check is reported only
  // here. CPU backend: nothing to do (its checks throw from the forward itself).
  void report_pending_errors();

 private:
  // The CPU backend's forward after the input checks.
  void run_cpu(const TensorView& hidden, const TensorView& topk_ids, const TensorView& topk_weights,
               const TensorView& out);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moerun
