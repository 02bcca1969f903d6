// `moerun run`'s forward of a synthetic job on the CPU or the CUDA backend, over ep_size expert-
// parallel ranks. On the CPU the ranks are the oracle's simulation (cpu/ep_layer.h); on CUDA they
// are virtual ranks of one EpLayer on this GPU (the real dispatch, combine and reduction kernels:
// no host-side sum). On CUDA the weights live on the device (uploaded once, or generated there)
// and the inputs are uploaded once; run() computes every rank and waits for the device, with no
// copy back, so that its time is the forward's; output() then copies the result back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/synthetic.h"
#include "moerun/config.h"
#include "moerun/ep.h"
#include "moerun/host_tensor.h"
#include "moerun/layer.h"
#include "moerun/weights.h"

namespace moerun::tools {

// The backend a run gets: kAuto -> CUDA when cuda_available(), else CPU. Rejects kCuda without a
// usable device, saying why ("no usable CUDA device: ...").
Backend resolve_backend(Backend asked);
// Empty when the CUDA backend can run here; else why not ("no usable CUDA device: ..." or "this
// build has no CUDA backend ...").
std::string cuda_unavailable_reason();
// Why `chosen` runs, for reports: "--backend cpu", "auto: NVIDIA H200 (sm_90, 139 GiB)",
// "auto: no usable CUDA device: ...".
std::string backend_reason(Backend asked, Backend chosen);

// The batch `moerun run` uses without --tokens: 256, except on the CPU backend for large layers:
// the largest power of two <= 256 whose routed-expert math (T x k x 6 H I flops) stays within
// 8 GFLOP, at least 8 tokens (DeepSeek-V3 and Mixtral-8x7B: 8; Qwen3-30B-A3B: 64).
std::int64_t default_tokens(const MoeConfig& config, Backend backend);

class LayerRunner {
 public:
  // `all`: host weights of all E experts, uploaded on CUDA. `options.backend` is resolved
  // (kCpu or kCuda). With config.ep_size > 1: `ep_backend` standard (every rank holds all T
  // tokens) or all-to-all (rank r holds its share of the T tokens, the first T % R ranks one more).
  LayerRunner(const MoeConfig& config, const MoeWeights& all, std::int64_t tokens,
              LayerOptions options, EpBackend ep_backend);
  // CUDA: random weights of all E experts generated on the device (cuda::random_device_weights).
  static LayerRunner with_device_weights(const MoeConfig& config, std::uint64_t seed,
                                         std::int64_t tokens, LayerOptions options,
                                         EpBackend ep_backend);
  ~LayerRunner();
  LayerRunner(LayerRunner&&) noexcept;
  LayerRunner(const LayerRunner&) = delete;
  LayerRunner& operator=(const LayerRunner&) = delete;

  Backend backend() const;
  Layout layout() const;
  // The weights' correction bias on the host (grouped routing; undefined otherwise).
  HostTensor correction_bias() const;

  // hidden [T, H] bf16, topk_ids / topk_weights [T, k] (host). Uploaded once on CUDA.
  void set_inputs(const TensorView& hidden, const TensorView& topk_ids,
                  const TensorView& topk_weights);
  // One forward of every rank; returns when the device is done (no copy back), reporting what the
  // finiteness checks found (LayerOptions::check_finite; the CUDA EpLayer of ep_size > 1 checks
  // no values).
  void run();
  // After run(): [T, H] bf16 on the host, every rank's experts included. CUDA EP: first throws the
  // device-side failure of any run since the last output(), if one failed (EpLayer::check).
  HostTensor output() const;
  // Host weights of all E experts for a reference, valid until the next call: on the CPU the
  // weights given; on CUDA a copy of the flagged experts (the others zeros).
  MoeWeights host_weights(const std::vector<bool>& experts);

 private:
  LayerRunner();
  void build(const MoeWeights& all, LayerOptions options, EpBackend ep_backend);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moerun::tools
