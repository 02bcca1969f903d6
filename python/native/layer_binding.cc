#include "layer_binding.h"

#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <string>

#include "moerun/errors.h"
#include "moerun/expert_map.h"
#include "moerun/layer.h"
#include "tensor_args.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace moerun::python {

namespace {

Backend backend_of(const std::string& name) {
  if (name == "auto") return Backend::kAuto;
  if (name == "cpu") return Backend::kCpu;
  if (name == "cuda") return Backend::kCuda;
  throw InvalidArgument("backend", "'auto', 'cpu' or 'cuda'", name);
}

LayoutChoice layout_of(const std::string& name) {
  if (name == "auto") return LayoutChoice::kAuto;
  if (name == "masked") return LayoutChoice::kMasked;
  if (name == "contiguous") return LayoutChoice::kContiguous;
  throw InvalidArgument("layout", "'auto', 'masked' or 'contiguous'", name);
}

LayerOptions options_of(const std::string& backend, const std::string& layout,
                        std::int64_t max_tokens, bool overlap, std::size_t workspace_limit_bytes,
                        bool own_workspace) {
  LayerOptions o;
  o.backend = backend_of(backend);
  o.layout = layout_of(layout);
  o.max_tokens = max_tokens;
  o.overlap = overlap;
  o.workspace_limit_bytes = workspace_limit_bytes;
  o.own_workspace = own_workspace;
  return o;
}

HiddenStates hidden_of(nb::handle hidden, nb::handle scale) {
  return {tensor_arg(hidden, "hidden_states"), tensor_arg(scale, "hidden_states scale")};
}

ForwardContext context_of(std::uintptr_t stream, nb::handle workspace) {
  const TensorView ws = tensor_arg(workspace, "workspace");
  return {reinterpret_cast<CudaStream>(stream), {ws.data(), ws.defined() ? ws.nbytes() : 0}};
}

}  // namespace

void bind_layer(nb::module_& m) {
  nb::class_<Layer>(m, "Layer")
      .def(
          "__init__",
          [](Layer* self, const MoeConfig& config, nb::handle w13, nb::handle w2,
             nb::handle w13_scale, nb::handle w2_scale, nb::handle correction_bias,
             const std::string& backend, const std::string& layout, std::int64_t max_tokens,
             bool overlap, std::size_t workspace_limit_bytes, bool own_workspace) {
            const MoeWeights weights{tensor_arg(w13, "w13"), tensor_arg(w13_scale, "w13_scale"),
                                     tensor_arg(w2, "w2"), tensor_arg(w2_scale, "w2_scale"),
                                     tensor_arg(correction_bias, "correction_bias")};
            new (self) Layer(config, weights,
                             options_of(backend, layout, max_tokens, overlap, workspace_limit_bytes,
                                        own_workspace));
          },
          "config"_a, "w13"_a, "w2"_a, "w13_scale"_a = nb::none(), "w2_scale"_a = nb::none(),
          "correction_bias"_a = nb::none(), "backend"_a = "auto", "layout"_a = "auto",
          "max_tokens"_a = 0, "overlap"_a = false, "workspace_limit_bytes"_a = 0,
          "own_workspace"_a = false,
          "Views of the weights (the caller keeps them alive); own_workspace allocates one.")
      .def_prop_ro("config", &Layer::config)
      .def_prop_ro("backend", [](const Layer& l) { return std::string(backend_name(l.backend())); })
      .def_prop_ro("device",
                   [](const Layer& l) {
                     const Device d = l.device();
                     return nb::make_tuple(d.type == DeviceType::kCuda ? "cuda" : "cpu", d.index);
                   })
      .def("layout_for",
           [](const Layer& l, std::int64_t tokens) {
             return std::string(layout_name(l.layout_for(tokens)));
           })
      .def("workspace_bytes_for", &Layer::workspace_bytes_for, "tokens"_a)
      .def_prop_ro("owned_workspace_bytes", &Layer::workspace_bytes)
      // Positional arguments, in this order, from moerun.Layer (keywords cost parsing time).
      .def(
          "forward",
          [](const Layer& l, nb::handle hidden, nb::handle logits, nb::handle out,
             nb::handle hidden_scale, std::uintptr_t stream, nb::handle workspace) {
            const HiddenStates h = hidden_of(hidden, hidden_scale);
            const TensorView router_logits = tensor_arg(logits, "router_logits");
            const TensorView o = tensor_arg(out, "out");
            const ForwardContext context = context_of(stream, workspace);
            nb::gil_scoped_release unlocked;
            l.forward(h, router_logits, o, context);
          },
          "hidden_states"_a, "router_logits"_a, "out"_a, "hidden_states_scale"_a = nb::none(),
          "stream"_a = 0, "workspace"_a = nb::none())
      .def(
          "forward_routed",
          [](const Layer& l, nb::handle hidden, nb::handle ids, nb::handle weights, nb::handle out,
             nb::handle hidden_scale, bool local_ids, nb::handle expert_map, std::uintptr_t stream,
             nb::handle workspace) {
            const HiddenStates h = hidden_of(hidden, hidden_scale);
            const TopKRouting routing{tensor_arg(ids, "topk_ids"),
                                      tensor_arg(weights, "topk_weights"),
                                      local_ids ? ExpertIds::kLocal : ExpertIds::kGlobal,
                                      tensor_arg(expert_map, "expert_map")};
            const TensorView o = tensor_arg(out, "out");
            const ForwardContext context = context_of(stream, workspace);
            nb::gil_scoped_release unlocked;
            l.forward_routed(h, routing, o, context);
          },
          "hidden_states"_a, "topk_ids"_a, "topk_weights"_a, "out"_a,
          "hidden_states_scale"_a = nb::none(), "local_ids"_a = false, "expert_map"_a = nb::none(),
          "stream"_a = 0, "workspace"_a = nb::none());

  m.def(
      "workspace_bytes",
      [](const MoeConfig& config, std::int64_t max_tokens, const std::string& layout, bool overlap,
         std::size_t workspace_limit_bytes) {
        return workspace_bytes(
            config, options_of("cuda", layout, max_tokens, overlap, workspace_limit_bytes, false));
      },
      "config"_a, "max_tokens"_a, "layout"_a = "auto", "overlap"_a = false,
      "workspace_limit_bytes"_a = 0,
      "Workspace bytes a CUDA layer needs for forwards of up to max_tokens tokens (no GPU "
      "needed).");
  m.def("cuda_available", &cuda_available);
  m.def("contiguous_expert_map", &contiguous_expert_map, "num_experts"_a, "ep_size"_a, "ep_rank"_a);
  m.def("round_robin_expert_map", &round_robin_expert_map, "num_experts"_a, "ep_size"_a,
        "ep_rank"_a);
}

}  // namespace moerun::python
