// The least time a layer's forward can take on a device, for `moerun bench` to report the layer
// against: its experts' weights read once at the copy bandwidth (what bounds decode) and its two
// grouped GEMMs' FLOPs at the dense matrix rate (what bounds prefill), for the routing drawn.
#pragma once

#include "moerun/config.h"

namespace moerun {

// Bytes of one expert's weights as stored: w13 [2I, H] and w2 [H, I] in the weight dtype, with
// their f32 128x128 block scales when FP8.
double expert_weight_bytes(const MoeConfig& config);

struct LayerFloor {
  double hbm_us = 0;   // weights of the experts hit, at the copy bandwidth
  double gemm_us = 0;  // the GEMMs' FLOPs at the matrix rate (0 when the rate is unknown)
  // Neither bound can be beaten, so the larger one is the floor.
  double us() const { return hbm_us > gemm_us ? hbm_us : gemm_us; }
};

// `experts_used`: local experts with at least one routed row (may be a mean over input sets);
// `gemm_flops`: 2 x routed rows x N x K summed over both GEMMs; rates as measured (copy_gbs > 0;
// matrix_tflops 0 = not measured).
LayerFloor layer_floor(const MoeConfig& config, double experts_used, double gemm_flops,
                       double copy_gbs, double matrix_tflops);

}  // namespace moerun
