#include "layer_runner.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/checks.h"
#include "core/expert_placement.h"
#include "cpu/ep_layer.h"
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

namespace {

// Rows [begin, end) of a contiguous [T, C] view (host or device), without a copy.
TensorView rows(const TensorView& t, std::int64_t begin, std::int64_t end) {
  const std::size_t row = t.size(0) > 0 ? t.nbytes() / static_cast<std::size_t>(t.size(0)) : 0;
  return TensorView(static_cast<std::byte*>(t.data()) + static_cast<std::size_t>(begin) * row,
                    t.dtype(), {end - begin, t.size(1)}, t.device());
}

}  // namespace

struct LayerRunner::Impl {
  MoeConfig config;
  std::int64_t tokens = 0;
  Backend backend = Backend::kCpu;
  EpBackend ep_backend = EpBackend::kStandard;
  LayerOptions options;
  std::vector<std::int64_t> first;       // all-to-all: rank r holds tokens [first[r], first[r + 1])
  MoeWeights host_all;                   // CPU: the caller's weights
  MoeWeights weights;                    // what the ranks read (host or device), all E experts
  std::unique_ptr<Layer> single;         // ep_size 1
  TensorView hidden, ids, topk_weights;  // what the ranks read (host or device)
  HostTensor out;                        // CPU: the output
  bool ran = false;
#ifdef MOERUN_HAS_CUDA
  cuda::DeviceMoeWeights device_weights;
  cuda::DeviceBuffer d_hidden, d_ids, d_weights, d_out;
  std::vector<cuda::DeviceBuffer> d_rank_out;  // standard EP: one output per rank
  std::unique_ptr<EpLayer> ep;
  HostMoeWeights downloaded;  // host_weights() on CUDA
#endif

  bool standard() const { return ep_backend == EpBackend::kStandard; }

  std::vector<MoeWeights> rank_weights() const {
    std::vector<MoeWeights> w;
    const int local = config.num_local_experts();
    for (int r = 0; r < config.ep_size; ++r) w.push_back(weights.slice_experts(r * local, local));
    return w;
  }
};

LayerRunner::LayerRunner() : impl_(std::make_unique<Impl>()) {}

LayerRunner::LayerRunner(const MoeConfig& config, const MoeWeights& all, std::int64_t tokens,
                         LayerOptions options, EpBackend ep_backend)
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
  build(weights, options, ep_backend);
}

LayerRunner LayerRunner::with_device_weights(const MoeConfig& config, std::uint64_t seed,
                                             std::int64_t tokens, LayerOptions options,
                                             EpBackend ep_backend) {
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
  runner.build(m.device_weights.view(), options, ep_backend);
#else
  (void)config;
  (void)seed;
  (void)tokens;
  (void)ep_backend;
#endif
  return runner;
}

void LayerRunner::build(const MoeWeights& all, LayerOptions options, EpBackend ep_backend) {
  Impl& m = *impl_;
  m.ep_backend = ep_backend;
  m.weights = all;
  const int ranks = m.config.ep_size;
  for (int r = 0; r <= ranks; ++r) {
    m.first.push_back(r * (m.tokens / ranks) + std::min<std::int64_t>(r, m.tokens % ranks));
  }
  // The CUDA workspace is sized once, for this batch.
  if (m.backend == Backend::kCuda) options.max_tokens = std::max<std::int64_t>(1, m.tokens);
  m.options = options;
  if (ranks == 1) {
    m.single = std::make_unique<Layer>(m.config, all, options);
    return;
  }
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    EpOptions ep;
    ep.backend = ep_backend;
    ep.layout = options.layout;
    ep.max_tokens_per_rank =
        m.standard() ? options.max_tokens : std::max<std::int64_t>(1, m.first[1] - m.first[0]);
    ep.overlap = options.overlap;
    m.ep = std::make_unique<EpLayer>(EpGroup::virtual_ranks(ranks), m.config, m.rank_weights(), ep);
  }
#endif
  // The CPU simulation needs nothing built: run() calls the oracle's EP forward.
  if (m.backend == Backend::kCpu && options.check_finite) detail::check_weight_values(all);
}

LayerRunner::~LayerRunner() = default;
LayerRunner::LayerRunner(LayerRunner&&) noexcept = default;

Backend LayerRunner::backend() const { return impl_->backend; }

Layout LayerRunner::layout() const {
  const Impl& m = *impl_;
  if (m.single) return m.single->layout_for(m.tokens);
#ifdef MOERUN_HAS_CUDA
  if (m.ep) return m.ep->layout();
#endif
  // The CPU simulation lays every rank out alike.
  switch (m.options.layout) {
    case LayoutChoice::kMasked:
      return Layout::kMasked;
    case LayoutChoice::kContiguous:
      return Layout::kContiguous;
    case LayoutChoice::kAuto:
      break;
  }
  return m.tokens <= 64 ? Layout::kMasked : Layout::kContiguous;
}

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
  m.topk_weights = topk_weights;
  m.ran = false;
  const Shape out_shape{m.tokens, m.config.hidden_size};
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    m.d_hidden = cuda::DeviceBuffer::upload(hidden);
    m.d_ids = cuda::DeviceBuffer::upload(topk_ids);
    m.d_weights = cuda::DeviceBuffer::upload(topk_weights);
    m.hidden = m.d_hidden.view();
    m.ids = m.d_ids.view();
    m.topk_weights = m.d_weights.view();
    m.d_out = cuda::DeviceBuffer(DType::kBF16, out_shape);
    m.d_rank_out.clear();
    if (m.ep && m.standard()) {
      for (int r = 0; r < m.config.ep_size; ++r) m.d_rank_out.emplace_back(DType::kBF16, out_shape);
    }
    return;
  }
#endif
  m.out = HostTensor(DType::kBF16, out_shape);
}

void LayerRunner::run() {
  Impl& m = *impl_;
  check_arg(m.hidden.defined(), "inputs", "set_inputs() before run()", "none");
  m.ran = true;
  const int ranks = m.config.ep_size;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    if (m.single) {
      m.single->forward_routed(m.hidden, m.ids, m.topk_weights, m.d_out.view());
    } else {
      std::vector<EpRankIO> io;
      for (int r = 0; r < ranks; ++r) {
        if (m.standard()) {
          io.push_back({m.hidden, m.ids, m.topk_weights, m.d_rank_out[r].view()});
        } else {
          const std::int64_t b = m.first[r], e = m.first[r + 1];
          io.push_back({rows(m.hidden, b, e), rows(m.ids, b, e), rows(m.topk_weights, b, e),
                        rows(m.d_out.view(), b, e)});
        }
      }
      m.ep->forward_routed(io, nullptr);
    }
    MOERUN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    // The device is done: what the layer's finiteness check found is reported here (EpLayer
    // checks no values).
    if (m.single) m.single->report_pending_errors();
    return;
  }
#endif
  if (m.single) {
    m.single->forward_routed(m.hidden, m.ids, m.topk_weights, m.out.view());
    return;
  }
  // The oracle's EP simulation checks no values: the hidden states here (the weights in build()),
  // as the single-rank layer does.
  if (m.options.check_finite) detail::check_finite(m.hidden, "hidden_states");
  const ExpertPlacement placement = ExpertPlacement::contiguous(m.config.num_experts, ranks);
  if (m.standard()) {
    const cpu::ForwardOptions options{layout(), 128, 0, false};
    cpu::ep_forward_standard(m.config, placement, m.rank_weights(), m.hidden, m.ids, m.topk_weights,
                             m.out.view(), options);
    return;
  }
  std::vector<cpu::EpRankTokens> inputs;
  std::vector<TensorView> outs;
  for (int r = 0; r < ranks; ++r) {
    const std::int64_t b = m.first[r], e = m.first[r + 1];
    inputs.push_back({rows(m.hidden, b, e), rows(m.ids, b, e), rows(m.topk_weights, b, e)});
    outs.push_back(rows(m.out.view(), b, e));
  }
  cpu::ep_forward_all_to_all(m.config, placement, m.rank_weights(), inputs, outs, {layout(), 0, 0});
}

HostTensor LayerRunner::output() const {
  const Impl& m = *impl_;
  check_arg(m.ran, "outputs", "run() first", "none");
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    // The device-side waits of every run so far, checked once here so that run() stays the
    // forward alone.
    if (m.ep) m.ep->check();
    // Every rank of the standard backend holds the same sum; rank 0's is the output.
    return (m.ep && m.standard() ? m.d_rank_out.front() : m.d_out).download();
  }
#endif
  return m.out.clone();
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
