#include "moerun/layer.h"

#include "core/checks.h"
#include "cpu/layer.h"
#include "cpu/routing.h"
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

namespace {
// On the CPU the masked layout costs E_l x M_max x H whatever the routing; it pays only when
// experts are nearly full, i.e. for few tokens. Beyond a decode-sized batch, contiguous.
constexpr std::int64_t kCpuMaskedMaxTokens = 64;

// CPU backend: the hidden states' shape, dtype and (check_finite) values.
void check_hidden(const MoeConfig& config, const LayerOptions& options, const TensorView& hidden) {
  check_arg(hidden.ndim() == 2, "hidden_states rank", "2 ([T, H])", hidden.ndim());
  check_tensor(hidden, "hidden_states", DType::kBF16, {hidden.size(0), config.hidden_size},
               DeviceType::kCpu);
  if (options.check_finite) detail::check_finite(hidden, "hidden_states");
}
}  // namespace

struct Layer::Impl {
  MoeConfig config;
  MoeWeights weights;
  LayerOptions options;
  Backend backend;
  void* stream = nullptr;  // CUDA: the cudaStream_t forwards are enqueued on
#ifdef MOERUN_HAS_CUDA
  std::unique_ptr<cuda::LayerBackend> cuda;
#endif
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
  weights.validate(config, config.num_local_experts(), DeviceType::kCpu);
  if (options.check_finite) detail::check_weight_values(weights);
}

Layer::~Layer() = default;
Layer::Layer(Layer&&) noexcept = default;
Layer& Layer::operator=(Layer&&) noexcept = default;

const MoeConfig& Layer::config() const { return impl_->config; }
Backend Layer::backend() const { return impl_->backend; }

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

void Layer::set_stream(void* stream) { impl_->stream = stream; }

void Layer::report_pending_errors() {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) impl_->cuda->report_pending_errors();
#endif
}

std::size_t Layer::workspace_bytes() const {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) return impl_->cuda->workspace_bytes();
#endif
  return 0;
}

void Layer::forward(const TensorView& hidden, const TensorView& router_logits,
                    const TensorView& out) {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) {
    impl_->cuda->forward(hidden, router_logits, out, static_cast<cudaStream_t>(impl_->stream));
    return;
  }
#endif
  // The hidden states first: a NaN there is the caller's, whatever the logits hold.
  check_hidden(impl_->config, impl_->options, hidden);
  if (impl_->options.check_finite) {
    check_tensor(router_logits, "router_logits", DType::kF32,
                 {hidden.size(0), impl_->config.num_experts}, DeviceType::kCpu);
    detail::check_finite(router_logits, "router_logits");
  }
  const cpu::TopK routing = cpu::route(impl_->config.routing, impl_->config.num_experts,
                                       router_logits, impl_->weights.correction_bias);
  run_cpu(hidden, routing.ids.view(), routing.weights.view(), out);
}

void Layer::forward_routed(const TensorView& hidden, const TensorView& topk_ids,
                           const TensorView& topk_weights, const TensorView& out) {
#ifdef MOERUN_HAS_CUDA
  if (impl_->cuda) {
    impl_->cuda->forward_routed(hidden, topk_ids, topk_weights, out,
                                static_cast<cudaStream_t>(impl_->stream));
    return;
  }
#endif
  check_hidden(impl_->config, impl_->options, hidden);
  run_cpu(hidden, topk_ids, topk_weights, out);
}

void Layer::run_cpu(const TensorView& hidden, const TensorView& topk_ids,
                    const TensorView& topk_weights, const TensorView& out) {
  const std::int64_t tokens = hidden.size(0);
  const std::int64_t limit = impl_->options.max_tokens;
  check_arg(limit == 0 || tokens <= limit, "hidden_states tokens",
            "<= max_tokens (" + std::to_string(limit) + ")", tokens);
  check_arg(out.dtype() == DType::kBF16 || out.dtype() == DType::kF32, "out dtype", "bf16 or f32",
            dtype_name(out.dtype()));
  check_tensor(out, "out", out.dtype(), {tokens, impl_->config.hidden_size}, DeviceType::kCpu);
  const Layout layout = layout_for(tokens);
  const bool overlap = impl_->options.overlap && layout == Layout::kMasked;
  cpu::moe_forward(impl_->config, impl_->weights, hidden, topk_ids, topk_weights, out,
                   {layout, 128, 0, overlap});
}

}  // namespace moerun
