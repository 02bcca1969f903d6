#include "layer_runner.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/ep_reduce.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"
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

std::string backend_reason(Backend asked, Backend chosen) {
  if (asked != Backend::kAuto) return "--backend " + std::string(backend_name(asked));
  if (chosen == Backend::kCpu) return "auto: " + cuda_unavailable_reason();
#ifdef MOERUN_HAS_CUDA
  return "auto: " + cuda::device_description();
#else
  return "auto";
#endif
}

std::int64_t default_tokens(const MoeConfig& config, Backend backend) {
  constexpr std::int64_t kTokens = 256, kMinCpuTokens = 8;
  constexpr double kCpuFlops = 8e9;
  if (backend == Backend::kCuda) return kTokens;
  const double per_token = 6.0 * static_cast<double>(config.top_k()) *
                           static_cast<double>(config.hidden_size) *
                           static_cast<double>(config.intermediate_size);
  std::int64_t tokens = kTokens;
  while (tokens > kMinCpuTokens && static_cast<double>(tokens) * per_token > kCpuFlops) tokens /= 2;
  return tokens;
}

struct LayerRunner::Impl {
  MoeConfig config;
  std::int64_t tokens = 0;
  Backend backend = Backend::kCpu;
  std::vector<Layer> ranks;
  MoeWeights host_all;              // CPU: the caller's weights
  TensorView hidden, ids, weights;  // what the ranks read (host or device)
  std::vector<HostTensor> outs;     // CPU: one per rank (f32 partials when EP > 1)
#ifdef MOERUN_HAS_CUDA
  cuda::DeviceMoeWeights device_weights;
  cuda::DeviceBuffer d_hidden, d_ids, d_weights;
  std::vector<cuda::DeviceBuffer> d_out;  // one per rank: bf16 (EP 1) or f32 partials
  HostMoeWeights downloaded;              // host_weights() on CUDA
#endif
};

LayerRunner::LayerRunner() : impl_(std::make_unique<Impl>()) {}

LayerRunner::LayerRunner(const MoeConfig& config, const MoeWeights& all, std::int64_t tokens,
                         LayerOptions options)
    : LayerRunner() {
  Impl& m = *impl_;
  m.config = config;
  m.tokens = tokens;
  m.backend = options.backend;
  check_arg(m.backend != Backend::kAuto, "backend", "resolved (cpu or cuda)", "auto");
  m.host_all = all;
  MoeWeights weights = all;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    m.device_weights = cuda::upload_weights(all);
    weights = m.device_weights.view();
  }
#endif
  build_ranks(weights, options);
}

LayerRunner LayerRunner::with_device_weights(const MoeConfig& config, std::uint64_t seed,
                                             std::int64_t tokens, LayerOptions options) {
  check_arg(options.backend == Backend::kCuda, "backend", "cuda (device weights)",
            backend_name(options.backend));
  LayerRunner runner;
#ifdef MOERUN_HAS_CUDA
  Impl& m = *runner.impl_;
  m.config = config;
  m.tokens = tokens;
  m.backend = Backend::kCuda;
  m.device_weights = cuda::random_device_weights(config, config.num_experts, seed, nullptr);
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
  runner.build_ranks(m.device_weights.view(), options);
#else
  (void)config;
  (void)seed;
  (void)tokens;
#endif
  return runner;
}

void LayerRunner::build_ranks(const MoeWeights& all, LayerOptions options) {
  Impl& m = *impl_;
  // The CUDA workspace is sized once, for this batch.
  if (m.backend == Backend::kCuda) options.max_tokens = std::max<std::int64_t>(1, m.tokens);
  const int local = m.config.num_local_experts();
  for (int r = 0; r < m.config.ep_size; ++r) {
    MoeConfig rank_config = m.config;
    rank_config.ep_rank = r;
    m.ranks.emplace_back(rank_config, all.slice_experts(r * local, local), options);
  }
}

LayerRunner::~LayerRunner() = default;
LayerRunner::LayerRunner(LayerRunner&&) noexcept = default;

Backend LayerRunner::backend() const { return impl_->backend; }
Layout LayerRunner::layout() const { return impl_->ranks.front().layout_for(impl_->tokens); }

HostTensor LayerRunner::correction_bias() const {
  const Impl& m = *impl_;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    return m.device_weights.correction_bias.defined() ? m.device_weights.correction_bias.download()
                                                      : HostTensor();
  }
#endif
  const TensorView& bias = m.host_all.correction_bias;
  if (!bias.defined()) return {};
  HostTensor copy(DType::kF32, bias.shape());
  std::memcpy(copy.view().data(), bias.data(), bias.nbytes());
  return copy;
}

void LayerRunner::set_inputs(const TensorView& hidden, const TensorView& topk_ids,
                             const TensorView& topk_weights) {
  Impl& m = *impl_;
  m.hidden = hidden;
  m.ids = topk_ids;
  m.weights = topk_weights;
  const DType out_dtype = m.config.ep_size > 1 ? DType::kF32 : DType::kBF16;
  const Shape out_shape{m.tokens, m.config.hidden_size};
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    m.d_hidden = cuda::DeviceBuffer::upload(hidden);
    m.d_ids = cuda::DeviceBuffer::upload(topk_ids);
    m.d_weights = cuda::DeviceBuffer::upload(topk_weights);
    m.hidden = m.d_hidden.view();
    m.ids = m.d_ids.view();
    m.weights = m.d_weights.view();
    m.d_out.clear();
    for (int r = 0; r < m.config.ep_size; ++r) m.d_out.emplace_back(out_dtype, out_shape);
    return;
  }
#endif
  m.outs.clear();
  for (int r = 0; r < m.config.ep_size; ++r) m.outs.emplace_back(out_dtype, out_shape);
}

void LayerRunner::run() {
  Impl& m = *impl_;
  check_arg(m.hidden.defined(), "inputs", "set_inputs() before run()", "none");
  for (std::size_t r = 0; r < m.ranks.size(); ++r) {
#ifdef MOERUN_HAS_CUDA
    if (m.backend == Backend::kCuda) {
      m.ranks[r].forward_routed(m.hidden, m.ids, m.weights, m.d_out[r].view());
      continue;
    }
#endif
    m.ranks[r].forward_routed(m.hidden, m.ids, m.weights, m.outs[r].view());
  }
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    MOERUN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    // The device is done: what the forwards' finiteness checks found is reported here.
    for (const Layer& rank : m.ranks) rank.report_pending_errors();
  }
#endif
}

HostTensor LayerRunner::output() const {
  const Impl& m = *impl_;
  std::vector<HostTensor> downloaded;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    for (const auto& d : m.d_out) downloaded.push_back(d.download());
  }
#endif
  const std::vector<HostTensor>& outs = m.backend == Backend::kCuda ? downloaded : m.outs;
  check_arg(!outs.empty(), "outputs", "run() first", "none");
  if (m.config.ep_size == 1) return outs.front().clone();
  // Standard EP: the all-reduce of the ranks' f32 partials, in rank order, rounded once.
  cpu::PartialSum sum(m.tokens, m.config.hidden_size);
  for (const HostTensor& o : outs) sum.add(o.view());
  HostTensor out(DType::kBF16, {m.tokens, m.config.hidden_size});
  sum.store_bf16(out.view());
  return out;
}

MoeWeights LayerRunner::host_weights(const std::vector<bool>& experts) {
  Impl& m = *impl_;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    m.downloaded = cuda::download_experts(m.device_weights.view(), experts);
    return m.downloaded.view();
  }
#endif
  (void)experts;
  return m.host_all;
}

}  // namespace moerun::tools
