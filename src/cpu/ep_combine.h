// CPU oracle: the all-to-all combine (DESIGN.md stage 7, all-to-all backend). Each computed row
// goes back to the source rank and slot it came from; each source then sums its tokens' k rows in
// fp32 in slot order and rounds once, exactly as the single-rank combine does.
#pragma once

#include <vector>

#include "cpu/ep_dispatch.h"
#include "moerun/host_tensor.h"

namespace moerun::cpu {

// One source rank's returned rows: [T_s * k, H] bf16, row t * k + j = the down row computed for
// slot (t, j) wherever it was computed; rows of skipped slots are never written.
HostTensor ep_return_rows(const EpDispatched& dispatched, const std::vector<TensorView>& down,
                          int source_rank, std::int64_t tokens, int top_k);

// The slots a source combines: [T_s, k] i32, t * k + j where the slot was sent, -1 where skipped
// (the src2dst of the returned rows).
HostTensor ep_combine_src2dst(const EpSent& sent);

// out_s for every source rank s: down[r] [rows_r, H] bf16 per receiver r (the rows of its layout);
// outs[s] [T_s, H] bf16 (or f32), times output_scale as the single-rank combine. topk_weights from
// `ranks`.
void ep_combine(const EpDispatched& dispatched, const std::vector<TensorView>& down,
                const std::vector<EpRankTokens>& ranks, const std::vector<TensorView>& outs,
                float output_scale = 1.0f);

}  // namespace moerun::cpu
