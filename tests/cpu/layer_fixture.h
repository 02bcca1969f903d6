// Scaled-down layers of the three model families, with seeded weights, inputs and routing.
#pragma once

#include <string>

#include "core/synthetic.h"
#include "cpu/routing.h"
#include "moerun/config.h"

namespace moerun::test {

// Small shapes with each family's routing and dtype; FP8 shapes keep H and I multiples of 128.
inline MoeConfig scaled_config(const std::string& family) {
  MoeConfig c = model_preset(family);
  if (family == "deepseek-v3") {
    c.hidden_size = 256;
    c.intermediate_size = 256;
    c.num_experts = 16;
    c.routing.top_k = 4;
    c.routing.num_groups = 4;
    c.routing.topk_groups = 2;
  } else if (family == "qwen3-30b-a3b") {
    c.hidden_size = 128;
    c.intermediate_size = 96;
    c.num_experts = 16;
    c.routing.top_k = 4;
  } else {
    c.hidden_size = 128;
    c.intermediate_size = 352;
  }
  return c;
}

struct LayerCase {
  MoeConfig config;
  HostMoeWeights weights;  // all E experts
  HostTensor hidden;
  cpu::TopK routing;

  LayerCase(const MoeConfig& c, std::int64_t tokens, std::uint64_t seed)
      : config(c),
        weights(random_weights(c, c.num_experts, seed)),
        hidden(random_hidden_states(tokens, c.hidden_size, seed)),
        routing(cpu::route(c.routing, c.num_experts,
                           random_router_logits(tokens, c.num_experts, seed).view(),
                           weights.correction_bias.view())) {}
};

}  // namespace moerun::test
