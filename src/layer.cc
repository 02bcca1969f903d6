#include "moerun/layer.h"

#include "cpu/layer.h"
#include "cpu/routing.h"
#include "cuda/workspace.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include "cuda/layer.h"
#endif

namespace moerun {

std::string_view backend_name(Backend backend) {
  switch (backend) {
    case Backend::kAuto:
      return "auto";
    case Backend::kCpu:
      return "cpu";
    case Backend::kCuda:
      return "cuda";
  }
  return "unknown";
}

#ifndef MOERUN_HAS_CUDA
bool cuda_available() { return false; }
#endif

std::size_t workspace_bytes(const MoeConfig& config, const LayerOptions& options) {
  if (options.backend == Backend::kCpu) return 0;
  config.validate();
  return cuda::plan_workspace(config, options).bytes;
}

namespace {
// On the CPU the masked layout costs E_l x M_max x H whatever the routing; it pays only when
// experts are nearly full, i.e. for few tokens. Beyond a decode-sized batch, contiguous.
constexpr std::int64_t kCpuMaskedMaxTokens = 64;
}  // namespace

struct Layer::Impl {
  MoeConfig config;
  MoeWeights weights;
  LayerOptions options;
  Backend backend;
  CudaStream stream = nullptr;  // convenience API: the stream its forwards are enqueued on
#ifdef MOERUN_HAS_CUDA
  std::unique_ptr<cuda::LayerBackend> cuda;
#endif

  // The CPU backend's forward (the oracle); the routing's ids are checked there.
  void cpu_forward(const HiddenStates& hidden, const TopKRouting& routing, const TensorView& out,
                   Layout layout) const {
    check_arg(hidden.data.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.data.ndim());
    const std::int64_t tokens = hidden.data.size(0);
    const std::int64_t limit = options.max_tokens;
    check_arg(limit == 0 || tokens <= limit, "hidden_states tokens",
              "<= max_tokens (" + std::to_string(limit) + ")", tokens);
    check_arg(out.dtype() == DType::kBF16 || out.dtype() == DType::kF32, "out dtype", "bf16 or f32",
              dtype_name(out.dtype()));
    check_tensor(out, "out", out.dtype(), {tokens, config.hidden_size}, DeviceType::kCpu);
    const bool overlap = options.overlap && layout == Layout::kMasked;
    cpu::moe_forward(config, weights, hidden, routing.topk_ids, routing.topk_weights, out,
                     {layout, 128, 0, overlap, routing.ids, routing.expert_map});
  }
};

Layer::Layer(const MoeConfig& config, const MoeWeights& weights, const LayerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  config.validate();
  Backend backend = options.backend;
  if (backend == Backend::kAuto) {
    // Weights already on the device decide for CUDA; host weights stay on the CPU backend.
    const bool device_weights = weights.w13.device().type == DeviceType::kCuda;
    backend = device_weights && cuda_available() ? Backend::kCuda : Backend::kCpu;
  }
  check_arg(options.max_tokens >= 0, "max_tokens", ">= 0", options.max_tokens);
  impl_->config = config;
  impl_->weights = weights;
  impl_->options = options;
  impl_->backend = backend;
#ifdef MOERUN_HAS_CUDA
  if (backend == Backend::kCuda) {
    impl_->cuda = std::make_unique<cuda::LayerBackend>(config, weights, options);
    return;
  }
#endif
  check_arg(backend == Backend::kCpu, "backend", "cpu (this build has no CUDA backend)",
            backend_name(backend));
  weights.validate(config, config.num_local_experts(), Device{});
}

Layer::~Layer() = default;
Layer::Layer(Layer&&) noexcept = default;
Layer& Layer::operator=(Layer&&) noexcept = default;

const MoeConfig& Layer::config() const { return impl_->config; }
Backend Layer::backend() const { return impl_->backend; }
Device Layer::device() const { return impl_->weights.w13.device(); }

Layout Layer::layout_for(std::int64_t tokens) const {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) return impl_->cuda->layout_for(tokens);
#endif
  switch (impl_->options.layout) {
    case LayoutChoice::kMasked:
      return Layout::kMasked;
    case LayoutChoice::kContiguous:
      return Layout::kContiguous;
    case LayoutChoice::kAuto:
      break;
  }
  return tokens <= kCpuMaskedMaxTokens ? Layout::kMasked : Layout::kContiguous;
}

std::size_t Layer::workspace_bytes_for(std::int64_t tokens) const {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) return impl_->cuda->workspace_bytes_for(tokens);
#endif
  check_arg(tokens >= 0, "tokens", ">= 0", tokens);
  return 0;
}

void Layer::forward(const HiddenStates& hidden, const TensorView& router_logits,
                    const TensorView& out, [[maybe_unused]] const ForwardContext& context) const {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) {
    impl_->cuda->forward(hidden, router_logits, out, context.stream, context.workspace);
    return;
  }
#endif
  const cpu::TopK routing = cpu::route(impl_->config.routing, impl_->config.num_experts,
                                       router_logits, impl_->weights.correction_bias);
  const std::int64_t tokens = hidden.data.ndim() > 0 ? hidden.data.size(0) : 0;
  impl_->cpu_forward(hidden, {routing.ids.view(), routing.weights.view(), ExpertIds::kGlobal}, out,
                     layout_for(tokens));
}

void Layer::forward_routed(const HiddenStates& hidden, const TopKRouting& routing,
                           const TensorView& out,
                           [[maybe_unused]] const ForwardContext& context) const {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) {
    impl_->cuda->forward_routed(hidden, routing, out, context.stream, context.workspace);
    return;
  }
#endif
  const std::int64_t tokens = hidden.data.ndim() > 0 ? hidden.data.size(0) : 0;
  impl_->cpu_forward(hidden, routing, out, layout_for(tokens));
}

void Layer::forward(const HiddenStates& hidden, const TensorView& router_logits,
                    const TensorView& out) {
  forward(hidden, router_logits, out, owned_context());
}

void Layer::forward_routed(const HiddenStates& hidden, const TensorView& topk_ids,
                           const TensorView& topk_weights, const TensorView& out) {
  forward_routed(hidden, {topk_ids, topk_weights, ExpertIds::kGlobal}, out, owned_context());
}

void Layer::set_stream(CudaStream stream) { impl_->stream = stream; }

std::size_t Layer::workspace_bytes() const {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) return impl_->cuda->owned_workspace().bytes;
#endif
  return 0;
}

ForwardContext Layer::owned_context() const {
  ForwardContext context{impl_->stream, {}};
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) {
    context.workspace = impl_->cuda->owned_workspace();
    check_arg(context.workspace.data != nullptr, "workspace",
              "one the layer owns (LayerOptions::own_workspace) or a ForwardContext with one",
              "none");
  }
#endif
  return context;
}

}  // namespace moerun
