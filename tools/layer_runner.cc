#include "layer_runner.h"

#include <algorithm>
#include <string>
#include <vector>

#include "core/expert_placement.h"
#include "cpu/ep_layer.h"
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
  if (asked == Backend::kCuda && !reason.empty()) throw Error("backend cuda: " + reason);
  return reason.empty() ? Backend::kCuda : Backend::kCpu;
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
  MoeWeights weights;                    // host or device, all E experts
  std::unique_ptr<Layer> single;         // ep_size 1
  TensorView hidden, ids, topk_weights;  // what the ranks read (host or device)
  HostTensor out;                        // host
#ifdef MOERUN_HAS_CUDA
  cuda::DeviceMoeWeights device_weights;
  cuda::DeviceBuffer d_hidden, d_ids, d_weights, d_out;
  std::vector<cuda::DeviceBuffer> d_rank_out;  // standard: one output per rank
  std::unique_ptr<EpLayer> ep;
#endif

  std::vector<MoeWeights> rank_weights() const {
    std::vector<MoeWeights> w;
    const int local = config.num_local_experts();
    for (int r = 0; r < config.ep_size; ++r) w.push_back(weights.slice_experts(r * local, local));
    return w;
  }
};

LayerRunner::LayerRunner(const MoeConfig& config, const MoeWeights& all, std::int64_t tokens,
                         LayerOptions options, EpBackend ep_backend)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = config;
  m.tokens = tokens;
  m.ep_backend = ep_backend;
  m.backend = resolve_backend(options.backend);
  options.backend = m.backend;
  m.weights = all;
  const int ranks = config.ep_size;
  for (int r = 0; r <= ranks; ++r) {
    m.first.push_back(r * (tokens / ranks) + std::min<std::int64_t>(r, tokens % ranks));
  }
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    m.device_weights = cuda::upload_weights(all);
    m.weights = m.device_weights.view();
    // The CUDA workspace is sized once, for this batch.
    options.max_tokens = std::max<std::int64_t>(1, tokens);
    if (ranks > 1) {
      EpOptions ep;
      ep.backend = ep_backend;
      ep.layout = options.layout;
      ep.max_tokens_per_rank = ep_backend == EpBackend::kStandard
                                   ? options.max_tokens
                                   : std::max<std::int64_t>(1, m.first[1] - m.first[0]);
      ep.overlap = options.overlap;
      m.ep = std::make_unique<EpLayer>(EpGroup::virtual_ranks(ranks), config, m.rank_weights(), ep);
    }
  }
#endif
  m.options = options;
  if (ranks == 1) m.single = std::make_unique<Layer>(config, m.weights, options);
  m.out = HostTensor(DType::kBF16, {tokens, config.hidden_size});
}

LayerRunner::~LayerRunner() = default;

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

void LayerRunner::set_inputs(const TensorView& hidden, const TensorView& topk_ids,
                             const TensorView& topk_weights) {
  Impl& m = *impl_;
  m.hidden = hidden;
  m.ids = topk_ids;
  m.topk_weights = topk_weights;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    m.d_hidden = cuda::DeviceBuffer::upload(hidden);
    m.d_ids = cuda::DeviceBuffer::upload(topk_ids);
    m.d_weights = cuda::DeviceBuffer::upload(topk_weights);
    m.hidden = m.d_hidden.view();
    m.ids = m.d_ids.view();
    m.topk_weights = m.d_weights.view();
    m.d_out = cuda::DeviceBuffer(DType::kBF16, {m.tokens, m.config.hidden_size});
    m.d_rank_out.clear();
    if (m.ep && m.ep_backend == EpBackend::kStandard) {
      for (int r = 0; r < m.config.ep_size; ++r) {
        m.d_rank_out.emplace_back(DType::kBF16, Shape{m.tokens, m.config.hidden_size});
      }
    }
  }
#endif
}

void LayerRunner::run() {
  Impl& m = *impl_;
  check_arg(m.hidden.defined(), "inputs", "set_inputs() before run()", "none");
  const int ranks = m.config.ep_size;
  const bool standard = m.ep_backend == EpBackend::kStandard;
#ifdef MOERUN_HAS_CUDA
  if (m.backend == Backend::kCuda) {
    if (m.single) {
      m.single->forward_routed(m.hidden, m.ids, m.topk_weights, m.d_out.view());
    } else {
      std::vector<EpRankIO> io;
      for (int r = 0; r < ranks; ++r) {
        if (standard) {
          io.push_back({m.hidden, m.ids, m.topk_weights, m.d_rank_out[r].view()});
        } else {
          const std::int64_t b = m.first[r], e = m.first[r + 1];
          io.push_back({rows(m.hidden, b, e), rows(m.ids, b, e), rows(m.topk_weights, b, e),
                        rows(m.d_out.view(), b, e)});
        }
      }
      m.ep->forward_routed(io, nullptr);
    }
    // Every rank of the standard backend holds the same sum; rank 0's is the output.
    m.out = (m.ep && standard ? m.d_rank_out.front() : m.d_out).download();
    if (m.ep) m.ep->check();
    return;
  }
#endif
  if (m.single) {
    m.single->forward_routed(m.hidden, m.ids, m.topk_weights, m.out.view());
    return;
  }
  const ExpertPlacement placement = ExpertPlacement::contiguous(m.config.num_experts, ranks);
  const cpu::ForwardOptions options{layout(), 128, 0, false};
  if (standard) {
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

const HostTensor& LayerRunner::output() const { return impl_->out; }

}  // namespace moerun::tools
