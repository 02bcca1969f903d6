#include "checkpoint_runner.h"

#include <algorithm>

#include "cpu/ep_reduce.h"
#include "cpu/router_gemm.h"
#include "layer_values.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include <cuda_runtime_api.h>

#include "cuda/cuda_check.h"
#include "cuda/device_memory.h"
#include "cuda/router_gemm.h"
#include "cuda/routing.h"
#include "io/hf_device_loader.h"
#endif

namespace moerun::tools {

namespace {

// The shared experts' routing: every token to the one expert, weight 1.
cpu::TopK every_token_once(std::int64_t tokens) {
  cpu::TopK r{HostTensor(DType::kI32, {tokens, 1}), HostTensor(DType::kF32, {tokens, 1})};
  std::fill(r.ids.data<int>(), r.ids.data<int>() + tokens, 0);
  std::fill(r.weights.data<float>(), r.weights.data<float>() + tokens, 1.0f);
  return r;
}

}  // namespace

struct CheckpointRunner::Impl {
  const io::HfCheckpoint* checkpoint = nullptr;
  int layer = 0;
  CheckpointRunOptions options;
  MoeConfig config;         // the routed layer (ep_size as asked)
  MoeConfig shared_config;  // num_experts 0: none here
  LoadReport load;
  io::MoeLayerInfo info;
  std::vector<Layer> ranks;
  std::optional<Layer> shared;
  // f32 partials, summed by output(); else the one rank writes bf16 straight out.
  bool partials = false;
  std::int64_t tokens = 0;

  // CPU
  std::optional<io::LoadedMoeLayer> host;  // the layer (CPU), or the reference's copy (CUDA)
  HostTensor hidden;
  cpu::TopK routing, shared_routing;
  std::vector<HostTensor> outs;  // one per rank (+ one for the shared experts)

#ifdef MOERUN_HAS_CUDA
  std::optional<io::DeviceMoeLayer> device;
  cuda::DeviceBuffer d_hidden, d_logits, d_ids, d_weights, d_shared_ids, d_shared_weights;
  std::vector<cuda::DeviceBuffer> d_outs;
#endif

  bool one_rank() const { return options.ep_rank >= 0; }
  int rank_count() const { return one_rank() ? 1 : config.ep_size; }
  bool cuda() const { return options.backend == Backend::kCuda; }
};

CheckpointRunner::CheckpointRunner(const io::HfCheckpoint& checkpoint, int layer,
                                   const CheckpointRunOptions& options,
                                   const ProgressFn& load_progress)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.checkpoint = &checkpoint;
  m.layer = layer;
  m.options = options;
  m.tokens = options.tokens;
  io::LoadOptions load;
  load.quantize_fp8 = options.quantize_fp8;
  load.ep_size = m.one_rank() ? options.ep_size : 1;
  load.ep_rank = m.one_rank() ? options.ep_rank : 0;
  // The ranks' partial outputs add up to the layer: rank 0 alone adds the shared experts.
  load.shared_experts = !m.one_rank() || options.ep_rank == 0;
  // Host loads check every value; device loads the router and bias (the CUDA layers the experts).
  load.check_finite = options.check_finite;

  MoeWeights routed, shared;
  LayerOptions layer_options;
  layer_options.backend = options.backend;
  layer_options.layout = options.layout;
  // On the CPU the loader has checked every value already, naming file and tensor; on CUDA the
  // layers check the experts (on the device, at construction) and each forward's inputs.
  layer_options.check_finite = options.check_finite && m.cuda();
  if (m.cuda()) {
#ifdef MOERUN_HAS_CUDA
    m.device = io::upload_moe_layer(checkpoint, layer, load, load_progress);
    m.config = m.device->config;
    m.shared_config = m.device->shared_config;
    m.load = {m.device->stats, m.device->notes, m.device->quantization};
    m.info = m.device->info;
    routed = m.device->weights();
    shared = m.device->shared_weights();
    // The CUDA workspace is sized once, for this batch.
    layer_options.max_tokens = std::max<std::int64_t>(1, m.tokens);
#else
    (void)load_progress;
    throw Error("backend cuda: this build has no CUDA backend");
#endif
  } else {
    m.host = io::load_moe_layer(checkpoint, layer, load);
    m.config = m.host->config;
    m.shared_config = m.host->shared_config;
    m.load = {m.host->stats, m.host->notes, m.host->quantization};
    m.info = m.host->info;
    routed = m.host->weights();
    shared = m.host->shared_weights();
  }
  if (!m.one_rank()) m.config.ep_size = options.ep_size;
  m.config.validate();
  const int local = m.config.num_local_experts();
  for (int r = 0; r < m.rank_count(); ++r) {
    MoeConfig rank_config = m.config;
    if (!m.one_rank()) rank_config.ep_rank = r;
    const MoeWeights w = m.one_rank() ? routed : routed.slice_experts(r * local, local);
    m.ranks.emplace_back(rank_config, w, layer_options);
  }
  if (m.shared_config.num_experts > 0) m.shared.emplace(m.shared_config, shared, layer_options);
  m.partials = m.one_rank() || m.ranks.size() > 1 || m.shared.has_value();
}

CheckpointRunner::~CheckpointRunner() = default;

const MoeConfig& CheckpointRunner::config() const { return impl_->config; }
const MoeConfig& CheckpointRunner::shared_config() const { return impl_->shared_config; }
Backend CheckpointRunner::backend() const { return impl_->options.backend; }
Layout CheckpointRunner::layout_for(std::int64_t tokens) const {
  return impl_->ranks.front().layout_for(tokens);
}
const LoadReport& CheckpointRunner::load() const { return impl_->load; }
const io::MoeLayerInfo& CheckpointRunner::info() const { return impl_->info; }

void CheckpointRunner::set_input(const HostTensor& hidden) {
  Impl& m = *impl_;
  const std::int64_t h = m.config.hidden_size, tokens = hidden.size(0);
  check_arg(tokens == m.tokens, "hidden_states tokens",
            "the batch the runner was built for (" + std::to_string(m.tokens) + ")", tokens);
  const DType out_dtype = m.partials ? DType::kF32 : DType::kBF16;
  const int outputs = static_cast<int>(m.ranks.size()) + (m.shared ? 1 : 0);
  m.shared_routing = every_token_once(tokens);
  if (m.cuda()) {
#ifdef MOERUN_HAS_CUDA
    const int k = m.config.top_k();
    m.d_hidden = cuda::DeviceBuffer::upload(hidden.view());
    m.d_logits = cuda::DeviceBuffer(DType::kF32, {tokens, m.config.num_experts});
    m.d_ids = cuda::DeviceBuffer(DType::kI32, {tokens, k});
    m.d_weights = cuda::DeviceBuffer(DType::kF32, {tokens, k});
    m.d_shared_ids = cuda::DeviceBuffer::upload(m.shared_routing.ids.view());
    m.d_shared_weights = cuda::DeviceBuffer::upload(m.shared_routing.weights.view());
    m.d_outs.clear();
    for (int i = 0; i < outputs; ++i) m.d_outs.emplace_back(out_dtype, Shape{tokens, h});
#endif
    return;
  }
  m.hidden = hidden.clone();
  m.outs.clear();
  for (int i = 0; i < outputs; ++i) m.outs.emplace_back(out_dtype, Shape{tokens, h});
}

void CheckpointRunner::run() {
  Impl& m = *impl_;
  const MoeConfig& c = m.config;
  if (m.cuda()) {
#ifdef MOERUN_HAS_CUDA
    check_arg(m.d_hidden.defined(), "inputs", "set_input() before run()", "none");
    const io::DeviceMoeLayer& d = *m.device;
    // Everything on the default stream, in order; the one wait is at the end.
    cuda::router_gemm(m.d_hidden.view(), d.router_weight.view(), m.d_logits.view(), nullptr);
    cuda::route(c.routing, c.num_experts, m.d_logits.view(), d.correction_bias.view(),
                m.d_ids.view(), m.d_weights.view(), nullptr);
    for (std::size_t r = 0; r < m.ranks.size(); ++r) {
      m.ranks[r].forward_routed(m.d_hidden.view(), m.d_ids.view(), m.d_weights.view(),
                                m.d_outs[r].view());
    }
    if (m.shared) {
      m.shared->forward_routed(m.d_hidden.view(), m.d_shared_ids.view(), m.d_shared_weights.view(),
                               m.d_outs.back().view());
    }
    MOERUN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
    for (const Layer& rank : m.ranks) rank.report_pending_errors();
    if (m.shared) m.shared->report_pending_errors();
#endif
    return;
  }
  check_arg(m.hidden.defined(), "inputs", "set_input() before run()", "none");
  const HostTensor logits = cpu::router_logits(m.hidden.view(), m.host->router_weight.view());
  // Finite hidden states can overflow the router: named by input row, not as router_logits.
  check_layer_values(logits.view(), "router_logits", m.hidden.view(), m.options.hidden_source);
  m.routing = cpu::route(c.routing, c.num_experts, logits.view(), m.host->correction_bias.view());
  for (std::size_t r = 0; r < m.ranks.size(); ++r) {
    m.ranks[r].forward_routed(m.hidden.view(), m.routing.ids.view(), m.routing.weights.view(),
                              m.outs[r].view());
  }
  if (m.shared) {
    m.shared->forward_routed(m.hidden.view(), m.shared_routing.ids.view(),
                             m.shared_routing.weights.view(), m.outs.back().view());
  }
}

HostTensor CheckpointRunner::output() const {
  const Impl& m = *impl_;
  std::vector<HostTensor> downloaded;
#ifdef MOERUN_HAS_CUDA
  if (m.cuda()) {
    for (const auto& d : m.d_outs) downloaded.push_back(d.download());
  }
#endif
  const std::vector<HostTensor>& outs = m.cuda() ? downloaded : m.outs;
  check_arg(!outs.empty(), "outputs", "run() first", "none");
  if (!m.partials) return outs.front().clone();
  // The simulated all-reduce in fp32, rounded once. Rank 0's partial holds the shared experts
  // (added right after its routed experts), so that the ranks' partials of --ep-rank runs, summed
  // in rank order, give this output bit for bit.
  cpu::PartialSum sum(m.tokens, m.config.hidden_size);
  sum.add(outs.front().view());
  if (m.shared) sum.add(outs.back().view());
  for (std::size_t r = 1; r < m.ranks.size(); ++r) sum.add(outs[r].view());
  if (m.one_rank()) return sum.sum().clone();
  HostTensor out(DType::kBF16, {m.tokens, m.config.hidden_size});
  sum.store_bf16(out.view());
  return out;
}

cpu::TopK CheckpointRunner::routing() const {
  const Impl& m = *impl_;
#ifdef MOERUN_HAS_CUDA
  if (m.cuda()) return {m.d_ids.download(), m.d_weights.download()};
#endif
  return {m.routing.ids.clone(), m.routing.weights.clone()};
}

const io::LoadedMoeLayer& CheckpointRunner::host_weights(const std::vector<bool>& experts) {
  Impl& m = *impl_;
  check_arg(!m.one_rank(), "reference", "every rank's experts (not with --ep-rank)", "one rank");
  if (m.cuda()) {
    io::LoadOptions load;
    load.quantize_fp8 = m.options.quantize_fp8;
    load.experts = experts;
    load.check_finite = m.options.check_finite;
    m.host = io::load_moe_layer(*m.checkpoint, m.layer, load);
  }
  return *m.host;
}

}  // namespace moerun::tools
