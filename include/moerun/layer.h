// moerun::Layer: one MoE layer, built once from a config and weights, run many times.
//
// Two ways to run it:
// - The engine API: forward(..., const ForwardContext&) and forward_routed(..., const
//   ForwardContext&) take the caller's cudaStream_t and workspace on every call. They allocate
//   nothing, never synchronize the host and keep no per-call state; the launch sequence depends on
//   T only, so a forward can be captured in a CUDA graph and replayed with new inputs of the same
//   T. They are const: forwards on different streams with different workspaces may run at the same
//   time, from any threads (the layer and its weights are only read). Forwards that share a
//   workspace must be ordered by the caller (one stream, or events). The layer makes its device
//   current for the call and restores the caller's afterwards.
// - The convenience API (CLI, tests): forward(...) without a context runs on the stream given to
//   set_stream and a workspace the layer allocated at construction; one forward at a time.
//
// Every tensor of a forward lives on the layer's device (device(): where the weights are).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "moerun/config.h"
#include "moerun/forward.h"
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
  // Tokens per forward at most; 0 = no limit (CPU backend only). The CUDA backend needs a limit: it
  // fixes which layout each T uses and the workspace forwards need.
  std::int64_t max_tokens = 0;
  // Single-batch overlap in the masked layout (the result is bitwise the same without it).
  bool overlap = false;
  // CUDA: the most device memory a workspace for max_tokens may take; 0 = no limit. With layout
  // auto, the masked layout is dropped when it does not fit; a layout that cannot fit at all is
  // rejected at construction. CPU: ignored.
  std::size_t workspace_limit_bytes = 0;
  // CUDA: allocate a workspace for max_tokens at construction, for the convenience forwards.
  // Engines that pass their own to every forward set false; the layer then allocates no workspace
  // (its only device memory is a copy of config.expert_map, when one is given).
  bool own_workspace = true;
};

class Layer {
 public:
  // `weights` hold this rank's E_l experts on the backend's device; they must outlive the layer
  // (the layer keeps views, not copies).
  Layer(const MoeConfig& config, const MoeWeights& weights, const LayerOptions& options = {});
  ~Layer();
  Layer(Layer&&) noexcept;
  Layer& operator=(Layer&&) noexcept;

  const MoeConfig& config() const;
  Backend backend() const;
  Device device() const;
  // The layout a forward of `tokens` tokens uses.
  Layout layout_for(std::int64_t tokens) const;

  // --- Engine API ---
  // Workspace bytes every forward of at most `tokens` tokens needs (<= max_tokens); 0 on the CPU
  // backend, which allocates host memory of its own.
  std::size_t workspace_bytes_for(std::int64_t tokens) const;
  // hidden [T, H] and router_logits [T, E] f32 -> out [T, H] (bf16, or f32 for an EP partial).
  void forward(const HiddenStates& hidden, const TensorView& router_logits, const TensorView& out,
               const ForwardContext& context) const;
  // With the routing done by the caller. CUDA: ids are not validated on the device; an id outside
  // the range of its kind is skipped.
  void forward_routed(const HiddenStates& hidden, const TopKRouting& routing, const TensorView& out,
                      const ForwardContext& context) const;

  // --- Convenience API: the stream of set_stream, the workspace allocated at construction ---
  void forward(const HiddenStates& hidden, const TensorView& router_logits, const TensorView& out);
  // topk_ids [T, k] i32 global ids in [-1, E), topk_weights [T, k] f32.
  void forward_routed(const HiddenStates& hidden, const TensorView& topk_ids,
                      const TensorView& topk_weights, const TensorView& out);
  void set_stream(CudaStream stream);
  // Device bytes of the workspace the layer allocated at construction (0: none, or CPU backend).
  std::size_t workspace_bytes() const;

 private:
  // The convenience API's stream and owned workspace (rejected when the layer owns none).
  ForwardContext owned_context() const;

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Workspace bytes a CUDA layer built with `config` and `options` needs for forwards of up to
// options.max_tokens tokens: what Layer::workspace_bytes_for(max_tokens) will say, known before
// any layer or device exists (memory planning). Plain arithmetic, in every build; 0 when
// options.backend is kCpu.
std::size_t workspace_bytes(const MoeConfig& config, const LayerOptions& options);

}  // namespace moerun
