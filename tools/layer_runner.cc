#include "layer_runner.h"

#include <algorithm>
#include <string>
#include <vector>

#include "cpu/ep_reduce.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include "cuda/device_memory.h"
#include "cuda/runtime.h"
#endif

namespace moerun::tools {

std::string cuda_unavailable_reason() {
#ifdef MOERUN_HAS_CUDA
  const std::string reason = cuda::device_unavailable_reason();
  return reason.empty() ? reason : "no usable CUDA device: " + reason;
#else
  return "this build has no CUDA backend (configure with nvcc available)";
#endif
}

Backend resolve_backend(Backend asked) {
  if (asked == Backend::kCpu) return asked;
  const std::string reason = cuda_unavailable_reason();
  if (asked == Backend::kCuda && !reason.empty()) throw ResourceError("backend cuda: " + reason);
  return reason.empty() ? Backend::kCuda : Backend::kCpu;
}

struct LayerRunner::Impl {
  MoeConfig config;
  std::int64_t tokens = 0;
  Backend backend = Backend::kCpu;
  std::vector<Layer> ranks;
  TensorView hidden, ids, weights;  // what the ranks read (host or device)
  HostTensor out, partial;          // host
#ifdef MOERUN_HAS_CUDA
  cuda::DeviceMoeWeights device_weights;
  cuda::DeviceBuffer d_hidden, d_ids, d_weights;
  std::vector<cuda::DeviceBuffer> d_out;  // one per rank: bf16 (EP 1) or f32 partials
#endif
};

LayerRunner::LayerRunner(const MoeConfig& config, const MoeWeights& all, std::int64_t tokens,
                         LayerOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = config;
  m.tokens = tokens;
  m.backend = resolve_backend(options.backend);
  options.backend = m.backend;
  MoeWeights weights = all;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    m.device_weights = cuda::upload_weights(all);
    weights = m.device_weights.view();
    // The CUDA workspace is sized once, for this batch.
    options.max_tokens = std::max<std::int64_t>(1, tokens);
  }
#endif
  const int local = config.num_local_experts();
  for (int r = 0; r < config.ep_size; ++r) {
    MoeConfig rank_config = config;
    rank_config.ep_rank = r;
    m.ranks.emplace_back(rank_config, weights.slice_experts(r * local, local), options);
  }
  m.out = HostTensor(DType::kBF16, {tokens, config.hidden_size});
  if (config.ep_size > 1) {
    m.partial = HostTensor(DType::kF32, {tokens, config.hidden_size});
  }
}

LayerRunner::~LayerRunner() = default;

Backend LayerRunner::backend() const { return impl_->backend; }
Layout LayerRunner::layout() const { return impl_->ranks.front().layout_for(impl_->tokens); }

void LayerRunner::set_inputs(const TensorView& hidden, const TensorView& topk_ids,
                             const TensorView& topk_weights) {
  Impl& m = *impl_;
  m.hidden = hidden;
  m.ids = topk_ids;
  m.weights = topk_weights;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    m.d_hidden = cuda::DeviceBuffer::upload(hidden);
    m.d_ids = cuda::DeviceBuffer::upload(topk_ids);
    m.d_weights = cuda::DeviceBuffer::upload(topk_weights);
    m.hidden = m.d_hidden.view();
    m.ids = m.d_ids.view();
    m.weights = m.d_weights.view();
    m.d_out.clear();
    const DType out_dtype = m.config.ep_size > 1 ? DType::kF32 : DType::kBF16;
    for (int r = 0; r < m.config.ep_size; ++r) {
      m.d_out.emplace_back(out_dtype, Shape{m.tokens, m.config.hidden_size});
    }
  }
#endif
}

void LayerRunner::run() {
  Impl& m = *impl_;
  check_arg(m.hidden.defined(), "inputs", "set_inputs() before run()", "none");
  const bool ep = m.config.ep_size > 1;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    for (std::size_t r = 0; r < m.ranks.size(); ++r) {
      m.ranks[r].forward_routed(m.hidden, m.ids, m.weights, m.d_out[r].view());
    }
    if (!ep) {
      m.out = m.d_out.front().download();
      // The download waited for the device: the forward's finiteness check has run.
      m.ranks.front().report_pending_errors();
      return;
    }
  }
#endif
  if (!ep) {
    m.ranks.front().forward_routed(m.hidden, m.ids, m.weights, m.out.view());
    return;
  }
  // Standard EP: the all-reduce of the ranks' f32 partials, in rank order, rounded once.
  cpu::PartialSum sum(m.tokens, m.config.hidden_size);
  for (std::size_t r = 0; r < m.ranks.size(); ++r) {
#ifdef MOERUN_HAS_CUDA
    if (m.backend == Backend::kCuda) {
      m.partial = m.d_out[r].download();
      m.ranks[r].report_pending_errors();
    }
#endif
    if (m.backend == Backend::kCpu) {
      m.ranks[r].forward_routed(m.hidden, m.ids, m.weights, m.partial.view());
    }
    sum.add(m.partial.view());
  }
  sum.store_bf16(m.out.view());
}

const HostTensor& LayerRunner::output() const { return impl_->out; }

}  // namespace moerun::tools
