// The parameters of one MoE layer on one rank, as views (host or device memory).
#pragma once

#include "moerun/config.h"
#include "moerun/tensor.h"

namespace moerun {

struct MoeWeights {
  TensorView w13;        // [E_l, 2I, H]: rows [0, I) gate, [I, 2I) up; bf16 or fp8_e4m3
  TensorView w13_scale;  // FP8 only: [E_l, 2I / 128, H / 128] f32, one per 128x128 block
  TensorView w2;         // [E_l, H, I], same dtype as w13
  TensorView w2_scale;   // FP8 only: [E_l, H / 128, I / 128] f32
  // Grouped routing only, optional: [E] f32, added to the scores for choosing experts.
  TensorView correction_bias;

  // Rejects weights that disagree with `config` (dtype, shapes, device), naming the tensor.
  // `num_experts` is the count the views hold (E_l for one rank, E for all ranks).
  void validate(const MoeConfig& config, int num_experts, Device device) const;

  // The experts [first, first + count) of these weights (views into the same memory).
  MoeWeights slice_experts(int first, int count) const;
};

}  // namespace moerun
