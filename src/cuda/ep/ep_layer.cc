#include "cuda/ep/ep_layer.h"

#include <algorithm>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/ep/ep_rank.h"
#include "cuda/ep/route.h"
#include "cuda/ep/sync.h"
#include "cuda/gemm_shape.h"
#include "cuda/layer.h"
#include "cuda/permute.h"
#include "moerun/errors.h"

namespace moerun::cuda::ep {

namespace {

constexpr std::size_t kAlign = 256;
constexpr std::int64_t kRowAlign = 128;  // the GEMMs' row block

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
std::int64_t round_rows(std::int64_t n) {
  return std::max<std::int64_t>(1, ceil_div<std::int64_t>(n, kRowAlign)) * kRowAlign;
}

// Hands out aligned byte offsets of one allocation.
struct Bump {
  std::size_t offset = 0;
  std::size_t take(std::size_t bytes) {
    const std::size_t at = offset;
    offset = align_up(offset + bytes);
    return at;
  }
};

std::vector<std::vector<int>> gather_maps(Transport& transport, const EpOptions& options,
                                          int experts) {
  const int ranks = transport.num_ranks();
  const std::size_t local = transport.local_ranks().size();
  if (options.expert_maps.empty()) {
    return {};  // the default placement
  }
  check_arg(options.expert_maps.size() == local, "expert_maps",
            std::to_string(local) + " (one per local rank) or none", options.expert_maps.size());
  std::vector<int> mine;
  for (const std::vector<int>& map : options.expert_maps) {
    check_arg(static_cast<int>(map.size()) == experts, "expert_map size",
              std::to_string(experts) + " (num_experts)", map.size());
    mine.insert(mine.end(), map.begin(), map.end());
  }
  const std::vector<int> all = transport.all_gather(mine);
  std::vector<std::vector<int>> maps;
  for (int r = 0; r < ranks; ++r) {
    maps.emplace_back(all.begin() + static_cast<std::ptrdiff_t>(r) * experts,
                      all.begin() + static_cast<std::ptrdiff_t>(r + 1) * experts);
  }
  return maps;
}

}  // namespace

EpLayerBackend::EpLayerBackend(std::shared_ptr<Transport> transport, const MoeConfig& config,
                               const std::vector<MoeWeights>& local_weights,
                               const EpOptions& options)
    : transport_(std::move(transport)), config_(config), options_(options) {
  const int ranks = transport_->num_ranks();
  check_arg(config.ep_size == ranks, "ep_size", std::to_string(ranks) + " (the group's size)",
            config.ep_size);
  config_.ep_rank = 0;
  config_.validate();
  const std::vector<int>& locals = transport_->local_ranks();
  check_arg(local_weights.size() == locals.size(), "EP local weights",
            std::to_string(locals.size()) + " (one per local rank)", local_weights.size());
  const std::int64_t t_max = options.max_tokens_per_rank;
  check_arg(t_max > 0, "max_tokens_per_rank", "> 0 (buffers are sized once, at construction)",
            t_max);
  check_arg(options.timeout_s > 0, "timeout_s", "> 0", options.timeout_s);
  check_arg(options.overlap_patience_s >= 0 && options.overlap_patience_s < options.timeout_s,
            "overlap_patience_s", ">= 0 and below timeout_s", options.overlap_patience_s);
  check_arg(options.max_recv_rows >= 0, "max_recv_rows", ">= 0 (0 = the worst case)",
            options.max_recv_rows);
  const bool all_to_all = options.backend == EpBackend::kAllToAll;
  switch (options.layout) {
    case LayoutChoice::kMasked:
      layout_ = Layout::kMasked;
      break;
    case LayoutChoice::kContiguous:
      layout_ = Layout::kContiguous;
      break;
    case LayoutChoice::kAuto:
      layout_ = t_max <= kMaskedMaxTokens ? Layout::kMasked : Layout::kContiguous;
      break;
  }
  check_arg(!options.overlap || !all_to_all || layout_ == Layout::kMasked, "overlap",
            "the masked layout (the down GEMM reports per masked row block)", layout_name(layout_));
  check_arg(!options.shard_output || !all_to_all, "shard_output",
            "the standard backend (all-to-all outputs are each source's own tokens)", "all-to-all");

  // The placement: EpOptions::expert_maps, or config.expert_map for a process of one rank.
  EpOptions with_maps = options;
  if (!config.expert_map.empty()) {
    check_arg(options.expert_maps.empty() && locals.size() == 1, "expert_map",
              "in EpOptions::expert_maps (one per local rank), or in MoeConfig for one local rank",
              "both, or MoeConfig's for several local ranks");
    with_maps.expert_maps = {config.expert_map};
  }
  config_.expert_map.clear();  // each rank's own map is set where a rank's config is made
  const std::vector<std::vector<int>> maps =
      gather_maps(*transport_, with_maps, config.num_experts);
  placement_ = maps.empty() ? ExpertPlacement::contiguous(config.num_experts, ranks)
                            : ExpertPlacement::from_expert_maps(maps);

  const int experts = config.num_experts, local = config.num_local_experts(), k = config.top_k();
  const std::int64_t h = config.hidden_size, inter = config.intermediate_size;
  const bool fp8 = config.is_fp8();
  const std::size_t act = dtype_size(config.weight_dtype);
  slot_stride_ = t_max * k;
  check_arg(slot_stride_ * ranks < (std::int64_t{1} << 31), "max_tokens_per_rank x top_k x ep_size",
            "< 2^31 (row origins are i32)", slot_stride_ * ranks);
  // A rank receives at most every rank's every token once per expert (ids are distinct).
  const std::int64_t worst = static_cast<std::int64_t>(ranks) * t_max;
  const std::int64_t asked = options.max_recv_rows > 0 ? options.max_recv_rows : 0;
  std::int64_t rows = 0;
  if (all_to_all) {
    if (layout_ == Layout::kMasked) {
      m_max_ = round_rows(asked > 0 ? std::min(asked, worst) : worst);
      rows = local * m_max_;
    } else {
      const std::int64_t slots = asked > 0 ? std::min(asked, worst * k) : worst * k;
      capacity_ = contiguous_capacity(ceil_div<std::int64_t>(slots, k), k, local);
      rows = capacity_;
    }
    check_arg(rows < (std::int64_t{1} << 31), "receive rows", "< 2^31", rows);
  }

  // Every rank's window, the same layout everywhere.
  Bump w;
  window_.flags = w.take(sizeof(int) * kNumPhases * static_cast<std::size_t>(ranks));
  window_.counts = w.take(sizeof(int) * static_cast<std::size_t>(ranks * experts));
  if (all_to_all) {
    window_.tokens = w.take(static_cast<std::size_t>(rows * h) * act);
    window_.scales = w.take(fp8 ? static_cast<std::size_t>(rows * (h / kQuantGroup)) * 4 : 0);
    window_.origin = w.take(static_cast<std::size_t>(rows) * 4);
    window_.returned = w.take(static_cast<std::size_t>(slot_stride_ * h) * 2);
  } else {
    window_.partial = w.take(static_cast<std::size_t>(t_max * h) * 4);
  }
  window_.total = w.offset;
  windows_ = transport_->allocate_windows(window_.total);

  // Placement tables and the error record, shared by the local ranks.
  Bump s;
  const std::size_t owner_at = s.take(sizeof(int) * experts);
  const std::size_t local_at = s.take(sizeof(int) * experts);
  const std::size_t global_at = s.take(sizeof(int) * experts);
  const std::size_t error_at = s.take(sizeof(DeviceError));
  MOERUN_CUDA_CHECK(cudaMalloc(&shared_, s.offset));
  MOERUN_CUDA_CHECK(cudaMemset(shared_, 0, s.offset));
  auto* shared = static_cast<char*>(shared_);
  std::vector<int> global_of;
  for (int r = 0; r < ranks; ++r) {
    for (int l = 0; l < local; ++l) global_of.push_back(placement_.global_id(r, l));
  }
  MOERUN_CUDA_CHECK(cudaMemcpy(shared + owner_at, placement_.owners().data(), sizeof(int) * experts,
                               cudaMemcpyHostToDevice));
  MOERUN_CUDA_CHECK(cudaMemcpy(shared + local_at, placement_.local_ids().data(),
                               sizeof(int) * experts, cudaMemcpyHostToDevice));
  MOERUN_CUDA_CHECK(cudaMemcpy(shared + global_at, global_of.data(), sizeof(int) * experts,
                               cudaMemcpyHostToDevice));
  tables_ = {reinterpret_cast<const int*>(shared + owner_at),
             reinterpret_cast<const int*>(shared + local_at),
             reinterpret_cast<const int*>(shared + global_at), experts, local};
  error_ = reinterpret_cast<DeviceError*>(shared + error_at);
  workspace_bytes_ = window_.total * locals.size() + s.offset;

  const std::int64_t slots = t_max * k;
  const bool overlap = all_to_all && options.overlap;
  int device = 0;
  MOERUN_CUDA_CHECK(cudaGetDevice(&device));
  for (std::size_t i = 0; i < locals.size(); ++i) {
    auto rank = std::make_unique<Rank>();
    rank->rank = locals[i];
    rank->weights = local_weights[i];
    MoeConfig rank_config = config_;
    rank_config.ep_rank = rank->rank;
    Bump b;
    const std::size_t epoch_at = b.take(sizeof(int));
    const std::size_t gave_up_at = b.take(sizeof(int));
    std::size_t scratch_at = 0, slot_pos_at = 0, send_base_at = 0, masked_m_at = 0;
    std::size_t recv_start_at = 0, m_sum_at = 0, m_indices_at = 0, src2dst_at = 0;
    std::size_t counters_at = 0, b_at = 0, act_at = 0, act_scale_at = 0;
    if (all_to_all) {
      local_weights[i].validate(rank_config, local, Device{DeviceType::kCuda, device});
      scratch_at = b.take(sizeof(int) * route_scratch_ints(slots, experts));
      slot_pos_at = b.take(sizeof(int) * slots);
      send_base_at = b.take(sizeof(int) * experts);
      masked_m_at = b.take(sizeof(int) * local);
      recv_start_at = b.take(sizeof(int) * local);
      m_sum_at = b.take(sizeof(int));
      m_indices_at = b.take(sizeof(int) * static_cast<std::size_t>(capacity_));
      src2dst_at = b.take(sizeof(int) * slots);
      counters_at = b.take(
          overlap ? sizeof(int) * static_cast<std::size_t>(local * (m_max_ / kGemmBlockM)) : 0);
      b_at = b.take(static_cast<std::size_t>(rows * std::max(2 * inter, h)) * 2);
      act_at = b.take(static_cast<std::size_t>(rows * inter) * act);
      act_scale_at = b.take(fp8 ? static_cast<std::size_t>(rows * (inter / kQuantGroup)) * 4 : 0);
    } else {
      rank_config.expert_map = placement_.expert_map(rank->rank);
      rank->standard = std::make_unique<LayerBackend>(
          rank_config, local_weights[i],
          LayerOptions{Backend::kCuda, options.layout, t_max, options.overlap, 0});
      workspace_bytes_ += rank->standard->owned_workspace().bytes;
    }
    MOERUN_CUDA_CHECK(cudaMalloc(&rank->local, b.offset));
    MOERUN_CUDA_CHECK(cudaMemset(rank->local, 0, b.offset));
    workspace_bytes_ += b.offset;
    auto* base = static_cast<char*>(rank->local);
    auto at = [&](std::size_t offset) { return reinterpret_cast<int*>(base + offset); };
    rank->epoch = at(epoch_at);
    rank->gave_up = at(gave_up_at);
    if (all_to_all) {
      rank->scratch = at(scratch_at);
      rank->slot_pos = at(slot_pos_at);
      rank->send_base = at(send_base_at);
      rank->masked_m = at(masked_m_at);
      rank->recv_start = at(recv_start_at);
      rank->m_sum = at(m_sum_at);
      rank->m_indices = at(m_indices_at);
      rank->combine_src2dst = at(src2dst_at);
      rank->counters = overlap ? at(counters_at) : nullptr;
      rank->gate_up_down = base + b_at;
      rank->activation = base + act_at;
      rank->activation_scales = fp8 ? reinterpret_cast<float*>(base + act_scale_at) : nullptr;
    }
    RankContext& c = rank->ctx;
    c.rank = rank->rank;
    c.num_ranks = ranks;
    c.peers = windows_->peers(static_cast<int>(i));
    c.window = windows_->local(static_cast<int>(i));
    c.epoch = rank->epoch;
    c.error = error_;
    c.flags_offset = window_.flags;
    c.timeout_ns = static_cast<unsigned long long>(options.timeout_s * 1e9);
    if (overlap) {
      MOERUN_CUDA_CHECK(cudaEventCreateWithFlags(&rank->before_down, cudaEventDisableTiming));
      MOERUN_CUDA_CHECK(cudaEventCreateWithFlags(&rank->overlap_done, cudaEventDisableTiming));
    }
    ranks_.push_back(std::move(rank));
  }
  if (overlap)
    MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&overlap_stream_, cudaStreamNonBlocking));
  MOERUN_CUDA_CHECK(cudaDeviceSynchronize());  // the zeroed buffers before any peer's first write
}

EpLayerBackend::~EpLayerBackend() {
  ranks_.clear();
  windows_.reset();
  if (overlap_stream_ != nullptr) cudaStreamDestroy(overlap_stream_);  // no throw from here
  if (shared_ != nullptr) cudaFree(shared_);
}

std::int64_t EpLayerBackend::receive_capacity() const {
  return layout_ == Layout::kMasked ? m_max_ : capacity_;
}

std::size_t EpLayerBackend::window_bytes() const { return window_.total; }

void EpLayerBackend::mark(int index, cudaStream_t stream) const {
  if (phase_events_ == nullptr) return;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  MOERUN_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  cudaEvent_t event = (*phase_events_)[static_cast<std::size_t>(index)];
  // NOTE: inside a capture only an External record becomes a node that records on every replay.
  MOERUN_CUDA_CHECK(capture == cudaStreamCaptureStatusActive
                        ? cudaEventRecordWithFlags(event, stream, cudaEventRecordExternal)
                        : cudaEventRecord(event, stream));
}

void EpLayerBackend::check_io(std::span<const EpRankIO> io) const {
  check_arg(io.size() == ranks_.size(), "EP forward ranks",
            std::to_string(ranks_.size()) + " (one per local rank)", io.size());
  const std::int64_t h = config_.hidden_size, k = config_.top_k();
  const bool standard = options_.backend == EpBackend::kStandard;
  for (std::size_t i = 0; i < io.size(); ++i) {
    const std::string rank = " of rank " + std::to_string(ranks_[i]->rank);
    const EpRankIO& x = io[i];
    check_arg(x.hidden.ndim() == 2, "hidden_states" + rank + " rank", "2 ([T, H])",
              x.hidden.ndim());
    const std::int64_t tokens = x.hidden.size(0);
    check_arg(tokens <= options_.max_tokens_per_rank, "hidden_states" + rank + " tokens",
              "<= max_tokens_per_rank (" + std::to_string(options_.max_tokens_per_rank) + ")",
              tokens);
    check_tensor(x.hidden, "hidden_states" + rank, DType::kBF16, {tokens, h}, DeviceType::kCuda);
    check_tensor(x.topk_ids, "topk_ids" + rank, DType::kI32, {tokens, k}, DeviceType::kCuda);
    check_tensor(x.topk_weights, "topk_weights" + rank, DType::kF32, {tokens, k},
                 DeviceType::kCuda);
    std::int64_t out_rows = tokens;
    if (standard) {
      check_arg(tokens == io[0].hidden.size(0), "hidden_states" + rank + " tokens",
                std::to_string(io[0].hidden.size(0)) +
                    " (the standard backend's ranks hold the same tokens)",
                tokens);
      if (options_.shard_output) {
        const int ranks = transport_->num_ranks();
        check_arg(tokens % ranks == 0, "hidden_states" + rank + " tokens",
                  "a multiple of ep_size (" + std::to_string(ranks) + ") with shard_output",
                  tokens);
        out_rows = tokens / ranks;
      }
    }
    check_tensor(x.out, "out" + rank, DType::kBF16, {out_rows, h}, DeviceType::kCuda);
  }
}

void EpLayerBackend::forward_routed(std::span<const EpRankIO> io, cudaStream_t stream) {
  check_io(io);
  mark(0, stream);
  if (options_.backend == EpBackend::kAllToAll) {
    forward_all_to_all(io, stream);
  } else {
    forward_standard(io, stream);
  }
  mark(kNumEpPhases, stream);
}

void EpLayerBackend::check() {
  DeviceError error{};
  MOERUN_CUDA_CHECK(cudaMemcpy(&error, error_, sizeof error, cudaMemcpyDeviceToHost));
  if (error.code == 0) return;
  MOERUN_CUDA_CHECK(cudaMemset(error_, 0, sizeof error));
  throw Error(describe(error));
}

int EpLayerBackend::overlap_fallbacks() const {
  int total = 0;
  for (const auto& r : ranks_) {
    int n = 0;
    MOERUN_CUDA_CHECK(cudaMemcpy(&n, r->gave_up, sizeof n, cudaMemcpyDeviceToHost));
    total += n;
  }
  return total;
}

}  // namespace moerun::cuda::ep
