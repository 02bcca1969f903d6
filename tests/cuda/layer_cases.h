// The layers the CUDA layer tests run: the three benchmark models shrunk so that the CPU oracle
// runs in well under a second, their seeded inputs, and the oracle's output for them.
#pragma once

#include <string>
#include <vector>

#include "core/synthetic.h"
#include "cpu/layer.h"
#include "cpu/routing.h"
#include "moerun/config.h"
#include "moerun/host_tensor.h"
#include "tolerances.h"

namespace moerun::test {

struct Model {
  std::string name;
  MoeConfig config;
};

// The three benchmark models with their routing and dtypes, shrunk so that the CPU oracle runs in
// well under a second: DeepSeek-V3 (FP8, grouped routing with bias), Qwen3-30B-A3B (BF16, softmax
// renormalized, I not a multiple of 128), Mixtral-8x7B (BF16, 8 experts, top-2).
inline std::vector<Model> models() {
  MoeConfig dsv3 = model_preset("deepseek-v3");
  dsv3.hidden_size = 512;
  dsv3.intermediate_size = 256;
  dsv3.num_experts = 64;
  MoeConfig qwen = model_preset("qwen3-30b-a3b");
  qwen.hidden_size = 256;
  qwen.intermediate_size = 192;
  qwen.num_experts = 32;
  MoeConfig mixtral = model_preset("mixtral-8x7b");
  mixtral.hidden_size = 512;
  mixtral.intermediate_size = 1024;
  return {{"deepseek-v3-small", dsv3}, {"qwen3-small", qwen}, {"mixtral-small", mixtral}};
}

inline double layer_vs_oracle_tolerance(const MoeConfig& c) {
  return c.is_fp8() ? kLayerVsOracleFp8 : kLayerVsOracleBf16;
}

struct Inputs {
  HostTensor hidden, logits;
  cpu::TopK routing;
};

inline Inputs make_inputs(const MoeConfig& c, const MoeWeights& weights, std::int64_t tokens,
                          std::uint64_t seed) {
  Inputs in{random_hidden_states(tokens, c.hidden_size, seed),
            random_router_logits(tokens, c.num_experts, seed),
            {}};
  in.routing = cpu::route(c.routing, c.num_experts, in.logits.view(), weights.correction_bias);
  return in;
}

inline HostTensor oracle(const MoeConfig& c, const MoeWeights& local, const Inputs& in,
                         Layout layout, DType out_dtype) {
  HostTensor out(out_dtype, {in.hidden.size(0), c.hidden_size});
  cpu::moe_forward(c, local, in.hidden.view(), in.routing.ids.view(), in.routing.weights.view(),
                   out.view(), {layout, 128, 0, false});
  return out;
}

}  // namespace moerun::test
