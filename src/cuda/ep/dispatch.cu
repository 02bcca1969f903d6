// Dispatch payload kernel: one block row per token, parallel over the hidden dimension; every
// peer write is a plain 16-byte (BF16) or 8-byte (FP8 codes) store through the peer table.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "core/scale_layout.h"
#include "cuda/cuda_check.h"
#include "cuda/device_utils.cuh"
#include "cuda/ep/dispatch.h"
#include "moerun/errors.h"

namespace moerun::cuda::ep {

namespace {

constexpr int kThreads = 128;
constexpr int kColumns = kThreads * 8;
constexpr int kMaxTopK = 32;

struct Params {
  RankContext c;
  PlacementTables p;
  ReceiveOffsets o;
  DispatchArgs a;
};

// Where slot (t, j) goes: its owner's rank and row there, or rank -1 when it is not sent.
struct Destination {
  int rank;
  long long row;
};

__device__ __forceinline__ Destination destination(const Params& q, long long slot) {
  const int g = q.a.topk_ids[slot];
  const int base = g >= 0 && g < q.p.num_experts ? q.a.send_base[g] : -1;
  if (base < 0) return {-1, -1};
  return {q.p.owner[g], static_cast<long long>(base) + q.a.slot_pos[slot]};
}

// Launch: grid (ceil(H / 1024), min(T, 65535)), kThreads threads x 8 columns; tokens stride by
// gridDim.y. FP8: 16 lanes share a 128-column group.
template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) dispatch_kernel(Params q) {
  const DispatchArgs& a = q.a;
  const int column = (blockIdx.x * kThreads + threadIdx.x) * 8;
  const bool active = column < a.hidden_size;
  const int groups = a.hidden_size / 128;
  for (long long t = blockIdx.y; t < a.tokens; t += gridDim.y) {
    // Uniform over the block: whether the token goes anywhere; one thread records the metadata.
    bool any = false;
    for (int j = 0; j < a.top_k; ++j) {
      const long long slot = t * a.top_k + j;
      const Destination d = destination(q, slot);
      any |= d.rank >= 0;
      if (blockIdx.x == 0 && threadIdx.x == 0) {
        a.combine_src2dst[slot] = d.rank >= 0 ? static_cast<int>(slot) : -1;
        if (d.rank >= 0) {
          int* origin = reinterpret_cast<int*>(q.c.peers[d.rank] + q.o.origin);
          origin[d.row] = static_cast<int>(q.c.rank * a.slot_stride + slot);
        }
      }
    }
    if (!any) continue;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (active) v = *reinterpret_cast<const uint4*>(a.hidden + t * a.hidden_size + column);
    if constexpr (kFp8) {
      float x[8];
      unpack_bf16x8(v, x);
      float scale;
      std::uint32_t words[2];
      quantize_fp8_group(x, scale, words);  // all lanes: full-mask shuffles
      const uint2 codes = make_uint2(words[0], words[1]);
      for (int j = 0; j < a.top_k; ++j) {
        const Destination d = destination(q, t * a.top_k + j);
        if (d.rank < 0 || !active) continue;
        char* window = q.c.peers[d.rank];
        const long long row = d.row;
        *reinterpret_cast<uint2*>(window + q.o.tokens + row * a.hidden_size + column) = codes;
        if (threadIdx.x % 16 == 0) {
          const ActScaleLayout at{a.scale_rows, groups};
          reinterpret_cast<float*>(window + q.o.scales)[at.index(row, column / 128)] = scale;
        }
      }
    } else {
      for (int j = 0; j < a.top_k; ++j) {
        const Destination d = destination(q, t * a.top_k + j);
        if (d.rank < 0 || !active) continue;
        char* window = q.c.peers[d.rank];
        const long long row = d.row;
        *reinterpret_cast<uint4*>(window + q.o.tokens + (row * a.hidden_size + column) * 2) = v;
      }
    }
  }
}

}  // namespace

void dispatch_tokens(const RankContext& ctx, const PlacementTables& placement,
                     const ReceiveOffsets& offsets, const DispatchArgs& args, cudaStream_t stream) {
  check_arg(args.top_k >= 1 && args.top_k <= kMaxTopK, "top_k",
            "1.." + std::to_string(kMaxTopK) + " for expert parallelism", args.top_k);
  check_arg(args.hidden_size % (args.fp8 ? 128 : 8) == 0, "hidden_size",
            args.fp8 ? "a multiple of 128 for FP8 weights" : "a multiple of 8", args.hidden_size);
  if (args.tokens > 0) {
    const Params q{ctx, placement, offsets, args};
    const dim3 grid(static_cast<unsigned>(ceil_div<std::int64_t>(args.hidden_size, kColumns)),
                    static_cast<unsigned>(std::min<std::int64_t>(args.tokens, 65535)));
    if (args.fp8) {
      dispatch_kernel<true><<<grid, kThreads, 0, stream>>>(q);
    } else {
      dispatch_kernel<false><<<grid, kThreads, 0, stream>>>(q);
    }
    MOERUN_CUDA_CHECK_LAUNCH();
  }
  signal_peers(ctx, Phase::kDispatch, stream);
}

}  // namespace moerun::cuda::ep
