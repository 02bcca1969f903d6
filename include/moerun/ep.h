// Expert parallelism: an MoE layer whose experts are spread over the ranks of a group (DESIGN.md
// stage 2 and "Single-batch overlap"). CUDA backend only.
//
// A group is made from the caller's NCCL communicator (what a server holds), by moerun from an
// NCCL unique id (one process per GPU), or as R virtual ranks in this process on one GPU, which
// run every kernel of the real path through peer pointers into one allocation (tests, benches).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "moerun/config.h"
#include "moerun/layer.h"
#include "moerun/tensor.h"
#include "moerun/weights.h"

struct ncclComm;  // NCCL's communicator: ncclComm_t is ncclComm*

namespace moerun {

enum class EpBackend : std::uint8_t {
  // Every rank holds all T tokens, computes its experts' share as an f32 partial; the partials are
  // summed (all-reduce, or reduce-scatter with EpOptions::shard_output).
  kStandard,
  // Each token goes only to the ranks owning its experts (FP8 1x128 or BF16 rows written straight
  // into the receiver's masked or contiguous layout); the results come back and are combined at
  // the source in fp32.
  kAllToAll,
};
std::string_view ep_backend_name(EpBackend backend);

// NCCL's ncclUniqueId, opaque: made by one process, handed to every rank (a pipe, a file).
struct EpUniqueId {
  std::array<char, 128> bytes{};
};

// Whether this build can make NCCL groups (MOERUN_ENABLE_NCCL found NCCL).
bool nccl_available();

class EpGroup {
 public:
  // The caller's communicator (not owned; it must outlive every layer of the group). This
  // process's rank runs on the current CUDA device.
  static EpGroup from_nccl(ncclComm* comm);
  static EpUniqueId new_unique_id();
  // A communicator moerun makes and owns: rank `rank` of `size`, on the current CUDA device.
  // Collective: every rank calls it with the same id.
  static EpGroup create_nccl(const EpUniqueId& id, int rank, int size);
  // `size` ranks in this process, all on the current CUDA device.
  static EpGroup virtual_ranks(int size);

  int size() const;
  // The ranks this process drives: its own (NCCL), or all of them (virtual).
  const std::vector<int>& local_ranks() const;
  std::string_view transport_name() const;  // "nccl" or "virtual"

  struct Impl;
  const std::shared_ptr<Impl>& impl() const { return impl_; }

 private:
  explicit EpGroup(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

struct EpOptions {
  EpBackend backend = EpBackend::kAllToAll;
  // One layout for the whole group (senders write into the receivers' layout): auto picks masked
  // when max_tokens_per_rank <= 128, contiguous beyond.
  LayoutChoice layout = LayoutChoice::kAuto;
  // Tokens per rank per forward at most (standard: T, which every rank holds). Required.
  std::int64_t max_tokens_per_rank = 0;
  // All-to-all: rows a rank may receive per forward (masked: per local expert); 0 = the worst case
  // (every rank's every token). A forward that would exceed it is reported as an error, not cut.
  std::int64_t max_recv_rows = 0;
  // Single-batch overlap (all-to-all, masked): the combine's sends start, on a second stream, for
  // the down GEMM's finished row blocks. The result is bitwise the same without it.
  bool overlap = false;
  // Overlap: the sending kernel leaves a row block to a pass after the down GEMM once the block's
  // progress count has not moved for this long (the GEMM's tiles for it may wait for SMs the
  // sending kernel holds). Any value gives the same bits; 0 sends everything after the GEMM.
  double overlap_patience_s = 5e-4;
  // Standard: rank r keeps only tokens [r * T / R, (r + 1) * T / R) of the output.
  bool shard_output = false;
  // One expert map per local rank (moerun/expert_map.h: [E] i32, global id -> local id, or -1),
  // or MoeConfig::expert_map for a process of one rank; neither = rank r owns
  // [r * E / R, (r + 1) * E / R). NCCL groups gather the other ranks' maps at construction.
  std::vector<std::vector<int>> expert_maps;
  // Every device-side wait for another rank gives up after this long and reports which rank,
  // phase and rank it waited for (EpLayer::check), instead of hanging.
  double timeout_s = 10.0;
};

// One local rank's tensors of a forward (device views). hidden [T, H] bf16, topk_ids [T, k] i32
// global ids in [-1, E) (distinct per token), topk_weights [T, k] f32, out [T, H] bf16 (standard
// with shard_output: [T / R, H]).
struct EpRankIO {
  TensorView hidden;
  TensorView topk_ids;
  TensorView topk_weights;
  TensorView out;
};

class EpLayer {
 public:
  // Collective: every rank of the group constructs its layer with the same config and options.
  // `local_weights[i]` are local rank i's E_l experts (device views, kept, not copied), in its
  // local-id order. config.ep_size must be the group's size (config.ep_rank is ignored). No value
  // is checked for NaN/Inf (Layer's LayerOptions::check_finite has no counterpart here yet).
  EpLayer(const EpGroup& group, const MoeConfig& config,
          const std::vector<MoeWeights>& local_weights, const EpOptions& options);
  ~EpLayer();
  EpLayer(EpLayer&&) noexcept;
  EpLayer& operator=(EpLayer&&) noexcept;

  Layout layout() const;
  // Device bytes this layer allocated (all local ranks, windows included).
  std::size_t workspace_bytes() const;

  // One forward of every local rank, enqueued on `stream` (a cudaStream_t; nullptr = the default
  // stream) without synchronizing; collective (every rank of the group calls it). The launch
  // sequence depends on nothing but the tensors' shapes, so it can be captured in a CUDA graph.
  void forward_routed(std::span<const EpRankIO> ranks, void* stream);

  // After the stream has been synchronized: throws moerun::Error naming the first device-side
  // failure of any local rank since the last check (a wait that timed out, a receive capacity
  // exceeded), then clears it.
  void check();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moerun
