// `moerun run`'s forward: a synthetic job on the CPU or the CUDA backend, over ep_size expert-
// parallel ranks. On the CPU the ranks are the oracle's simulation (cpu/ep_layer.h); on CUDA they
// are virtual ranks of one EpLayer on this GPU (the real dispatch and combine kernels). On CUDA the
// weights and inputs are uploaded once and freed with the runner; each run() brings the output
// back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

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

class LayerRunner {
 public:
  // `all`: host weights of all E experts; `options.backend` kAuto picks CUDA when
  // cuda_available(). Rejects kCuda without a usable device ("no usable CUDA device: why").
  // With config.ep_size > 1: `ep_backend` standard (every rank holds all T tokens) or all-to-all
  // (rank r holds its share of the T tokens, the first T % R ranks one more).
  LayerRunner(const MoeConfig& config, const MoeWeights& all, std::int64_t tokens,
              LayerOptions options, EpBackend ep_backend);
  ~LayerRunner();
  LayerRunner(const LayerRunner&) = delete;
  LayerRunner& operator=(const LayerRunner&) = delete;

  Backend backend() const;
  Layout layout() const;

  // hidden [T, H] bf16, topk_ids / topk_weights [T, k] (host). Uploaded once on CUDA.
  void set_inputs(const TensorView& hidden, const TensorView& topk_ids,
                  const TensorView& topk_weights);
  // One forward of every rank; returns when `output()` holds the result.
  void run();
  // [T, H] bf16 on the host.
  const HostTensor& output() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moerun::tools
