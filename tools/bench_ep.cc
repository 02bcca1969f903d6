#include "bench_ep.h"

#include <cstdio>
#include <string>
#include <vector>

#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "bench_timing.h"
#include "cli_options.h"
#include "cuda/cuda_check.h"
#include "cuda/device_memory.h"
#include "cuda/ep/ep_layer.h"
#include "cuda/ep/group.h"
#include "cuda/layer.h"
#include "cuda/routing.h"
#include "cuda/runtime.h"
#include "ep_launch.h"
#include "moerun/ep.h"
#endif

namespace moerun::tools {

#ifndef MOERUN_HAS_CUDA

int ep_bench_command(const BenchArgs&) {
  throw ResourceError("bench: this build has no CUDA backend (configure with nvcc available)");
}

#else

namespace {

using cuda::DeviceBuffer;
using cuda::ep::EpLayerBackend;
using nlohmann::json;

constexpr int kWarmup = 3;

// Medians over the timed forwards, microseconds.
struct PhaseTimes {
  double dispatch = 0, experts = 0, combine = 0, total = 0;
};

// Bytes a forward's phases write into other ranks' windows (all local ranks together), from the
// routing drawn: dispatch = each sent row with its scales and origin; combine = each returned row.
// `remote` counts only rows whose owner is another rank (what crosses NVLink).
struct Traffic {
  double dispatch = 0, combine = 0, remote_dispatch = 0, remote_combine = 0;
};

struct RankInputs {
  DeviceBuffer hidden, logits, ids, weights, out;
};

double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

class EventSet {
 public:
  EventSet() {
    for (auto& e : events_) MOERUN_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~EventSet() {
    for (auto e : events_) cudaEventDestroy(e);
  }
  EventSet(const EventSet&) = delete;
  EventSet& operator=(const EventSet&) = delete;
  const cuda::ep::PhaseEvents& events() const { return events_; }
  float ms(int from, int to) const {
    float t = 0;
    MOERUN_CUDA_CHECK(cudaEventElapsedTime(&t, events_[static_cast<std::size_t>(from)],
                                           events_[static_cast<std::size_t>(to)]));
    return t;
  }

 private:
  cuda::ep::PhaseEvents events_{};
};

// Times `layer` on `io`: warm-up, then `repeat` forwards (graph replays or plain launches), the
// median of each phase between the layer's own phase events.
PhaseTimes time_layer(EpLayerBackend& layer, const std::vector<EpRankIO>& io, int repeat,
                      bool graphs, cudaStream_t stream) {
  EventSet events;
  layer.set_phase_events(&events.events());
  cudaGraphExec_t exec = nullptr;
  if (graphs) {
    cudaGraph_t graph = nullptr;
    MOERUN_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      layer.forward_routed(io, stream);
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);  // leave capture mode before reporting
      if (graph != nullptr) cudaGraphDestroy(graph);
      layer.set_phase_events(nullptr);
      throw;
    }
    MOERUN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    MOERUN_CUDA_CHECK(status);
  }
  auto run = [&] {
    if (exec != nullptr) {
      MOERUN_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    } else {
      layer.forward_routed(io, stream);
    }
  };
  std::vector<float> dispatch, experts, combine, total;
  for (int i = 0; i < kWarmup + repeat; ++i) {
    run();
    MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (i < kWarmup) continue;
    dispatch.push_back(events.ms(0, 1));
    experts.push_back(events.ms(1, 2));
    combine.push_back(events.ms(2, 3));
    total.push_back(events.ms(0, 3));
  }
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  layer.set_phase_events(nullptr);
  layer.check();
  return {1e3 * median(dispatch), 1e3 * median(experts), 1e3 * median(combine),
          1e3 * median(total)};
}

Traffic traffic(const MoeConfig& c, const ExpertPlacement& placement,
                const std::vector<int>& local_ranks, const std::vector<RankInputs>& inputs) {
  const double h = static_cast<double>(c.hidden_size);
  const double row = h * static_cast<double>(dtype_size(c.weight_dtype)) +
                     (c.is_fp8() ? h / kQuantGroup * 4 : 0) + 4;
  Traffic t;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const HostTensor ids = inputs[i].ids.download();
    for (std::int64_t s = 0; s < ids.numel(); ++s) {
      const int g = ids.data<int>()[s];
      if (g < 0) continue;
      const bool remote = placement.owner(g) != local_ranks[i];
      t.dispatch += row;
      t.combine += h * 2;
      if (remote) {
        t.remote_dispatch += row;
        t.remote_combine += h * 2;
      }
    }
  }
  return t;
}

double gbs(double bytes, double us) { return us > 0 ? bytes / us * 1e-3 : 0; }

// Every case of the command on one group (this process's local ranks). Rank 0 prints.
int run_cases(const BenchArgs& args, const EpGroup& group, bool print) {
  const std::shared_ptr<cuda::ep::Transport>& transport = group.impl()->transport;
  const std::vector<int>& locals = transport->local_ranks();
  const int ranks = transport->num_ranks();
  const bool virtual_ranks = transport->name() == "virtual";
  const EpBackend backend =
      args.ep_backend == "standard" ? EpBackend::kStandard : EpBackend::kAllToAll;
  const std::vector<std::int64_t> token_list =
      args.tokens.empty() ? std::vector<std::int64_t>{128, 4096} : args.tokens;
  const std::vector<std::string> models =
      args.models.empty() ? std::vector<std::string>{"deepseek-v3"} : args.models;
  cudaStream_t stream = nullptr;
  MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() { cudaStreamDestroy(s); }
  } guard{stream};
  int device = 0;
  cudaDeviceProp prop{};
  MOERUN_CUDA_CHECK(cudaGetDevice(&device));
  MOERUN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  json results = json::array();
  if (print && !args.json) {
    std::printf("moerun bench (expert parallelism): %s, %d %s ranks, %s, %s; %s, median of %d\n",
                prop.name, ranks, std::string(transport->name()).c_str(),
                std::string(ep_backend_name(backend)).c_str(),
                virtual_ranks ? "all ranks on this GPU (totals are R ranks' work)"
                              : "one process per GPU (times of rank 0)",
                args.no_graph ? "plain launches" : "CUDA graph replays", args.repeat);
  }
  for (const std::string& model : models) {
    MoeConfig config = model_preset(model);
    config.ep_size = ranks;
    config.validate();
    const int local = config.num_local_experts();
    // Weights: virtual ranks slice one set of all E experts; a process makes its own E_l.
    const cuda::DeviceMoeWeights weights = cuda::random_device_weights(
        config, virtual_ranks ? config.num_experts : local, args.seed + 1000u * locals[0], stream);
    std::vector<MoeWeights> rank_weights;
    for (const int r : locals) {
      rank_weights.push_back(weights.view().slice_experts(virtual_ranks ? r * local : 0, local));
    }
    for (const std::int64_t t : token_list) {
      // Standard: every rank holds the whole batch of R * T tokens (the same work in all).
      const std::int64_t held = backend == EpBackend::kStandard ? t * ranks : t;
      std::vector<RankInputs> inputs;
      std::vector<EpRankIO> io;
      for (std::size_t i = 0; i < locals.size(); ++i) {
        RankInputs in;
        const std::uint64_t seed =
            args.seed * 31 +
            static_cast<std::uint64_t>(backend == EpBackend::kStandard ? 0 : locals[i]);
        in.hidden = DeviceBuffer(DType::kBF16, {held, config.hidden_size});
        in.logits = DeviceBuffer(DType::kF32, {held, config.num_experts});
        in.ids = DeviceBuffer(DType::kI32, {held, config.top_k()});
        in.weights = DeviceBuffer(DType::kF32, {held, config.top_k()});
        in.out = DeviceBuffer(DType::kBF16, {held, config.hidden_size});
        cuda::fill_random(in.hidden.view(), seed, 1.0f, stream);
        cuda::fill_random(in.logits.view(), seed + 1, 2.0f, stream);
        cuda::route(config.routing, config.num_experts, in.logits.view(),
                    rank_weights[i].correction_bias, in.ids.view(), in.weights.view(), stream);
        io.push_back({in.hidden.view(), in.ids.view(), in.weights.view(), in.out.view()});
        inputs.push_back(std::move(in));
      }
      MOERUN_CUDA_CHECK(cudaStreamSynchronize(stream));
      const bool masked_layout =
          args.layout == "masked" || (args.layout == "auto" && held <= cuda::kMaskedMaxTokens);
      std::vector<bool> overlaps = {false};
      if (backend == EpBackend::kAllToAll && masked_layout) overlaps.push_back(true);
      for (const bool overlap : overlaps) {
        EpOptions options;
        options.backend = backend;
        options.layout = parse_layout(args.layout);
        options.max_tokens_per_rank = held;
        // Balanced routing sends each rank about T * k rows; room for twice that.
        if (backend == EpBackend::kAllToAll && !masked_layout) {
          options.max_recv_rows = 2 * t * config.top_k();
        }
        options.overlap = overlap;
        EpLayerBackend layer(transport, config, rank_weights, options);
        const PhaseTimes times = time_layer(layer, io, args.repeat, !args.no_graph, stream);
        const Traffic bytes = traffic(config, layer.placement(), locals, inputs);
        const int fallbacks = layer.overlap_fallbacks();
        const double per_rank = virtual_ranks ? times.total / ranks : times.total;
        // Virtual ranks: every row goes through the peer path on this GPU, so all of them count.
        const double disp_bytes = virtual_ranks ? bytes.dispatch : bytes.remote_dispatch;
        const double comb_bytes = virtual_ranks ? bytes.combine : bytes.remote_combine;
        json j = {{"model", model},
                  {"tokens_per_rank", t},
                  {"tokens_held", held},
                  {"ep_size", ranks},
                  {"transport", std::string(transport->name())},
                  {"backend", std::string(ep_backend_name(backend))},
                  {"layout", std::string(layout_name(layer.layout()))},
                  {"overlap", overlap},
                  {"dispatch_us", times.dispatch},
                  {"experts_us", times.experts},
                  {"combine_us", times.combine},
                  {"total_us", times.total},
                  {"per_rank_us", per_rank},
                  {"dispatch_bytes", disp_bytes},
                  {"combine_bytes", comb_bytes},
                  {"dispatch_gbs", gbs(disp_bytes, times.dispatch)},
                  {"combine_gbs", gbs(comb_bytes, times.combine)},
                  {"overlap_fallbacks", fallbacks},
                  {"workspace_bytes", layer.workspace_bytes()}};
        results.push_back(j);
        if (print && !args.json) {
          std::printf(
              "%s T %lld/rank %-10s overlap %-3s  dispatch %9.1f us %7.1f GB/s %8.2f MB | experts "
              "%9.1f us | combine %9.1f us %7.1f GB/s %8.2f MB | total %9.1f us (%.1f per "
              "rank)%s\n",
              model.c_str(), static_cast<long long>(t),
              std::string(layout_name(layer.layout())).c_str(), overlap ? "on" : "off",
              times.dispatch, gbs(disp_bytes, times.dispatch), disp_bytes * 1e-6, times.experts,
              times.combine, gbs(comb_bytes, times.combine), comb_bytes * 1e-6, times.total,
              per_rank,
              fallbacks > 0 ? (" [" + std::to_string(fallbacks) + " overlap fallbacks]").c_str()
                            : "");
          std::fflush(stdout);
        }
      }
    }
  }
  if (print && args.json) {
    const json report = {{"device", prop.name},
                         {"date", utc_now()},
                         {"graphs", !args.no_graph},
                         {"repeat", args.repeat},
                         {"results", results}};
    std::printf("%s\n", report.dump(1).c_str());
  }
  return 0;
}

}  // namespace

int ep_bench_command(const BenchArgs& args) {
  check_arg(args.ep_backend == "standard" || args.ep_backend == "all-to-all", "--ep-backend",
            "standard or all-to-all", args.ep_backend);
  if (args.ep_transport == "nccl") {
    // One process per GPU; nothing here may touch CUDA before the ranks are forked.
    return run_ranks(args.ep_size, [&](int rank, const EpUniqueId& id) {
      const EpGroup group = EpGroup::create_nccl(id, rank, args.ep_size);
      return run_cases(args, group, rank == 0);
    });
  }
  const std::string reason = cuda::device_unavailable_reason();
  if (!reason.empty()) throw ResourceError("bench: no usable CUDA device: " + reason);
  return run_cases(args, EpGroup::virtual_ranks(args.ep_size), true);
}

#endif  // MOERUN_HAS_CUDA

}  // namespace moerun::tools
