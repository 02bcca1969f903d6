#include "ep_check_command.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "ep_launch.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstring>

#include "core/expert_placement.h"
#include "core/metrics.h"
#include "core/synthetic.h"
#include "core/tolerances.h"
#include "cpu/routing.h"
#include "cuda/cuda_check.h"
#include "cuda/device_memory.h"
#include "cuda/ep/nccl_transport.h"
#include "cuda/layer.h"
#include "moerun/ep.h"
#endif

namespace moerun::tools {

void add_ep_check_command(CLI::App& app, EpCheckArgs& args) {
  CLI::App* check = app.add_subcommand(
      "ep-check",
      "Check expert parallelism over NCCL on this machine's GPUs, one process per GPU, against "
      "the single-rank layer on each rank's GPU: standard and all-to-all backends, masked and "
      "contiguous layouts, FP8 and BF16 (small shapes), a communicator moerun makes and one the "
      "caller makes, single-batch overlap on and off, ranks with no tokens, tokens whose experts "
      "are all remote, a rank that receives none. Exit 0 when every case passes, 1 otherwise.");
  check->add_option("--ep-size", args.ep_size, "Ranks (processes), one GPU each")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  check->add_option("--tokens", args.tokens, "Tokens per rank")
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{4096}))
      ->capture_default_str();
  check->add_option("--seed", args.seed, "Seed of the weights and inputs")->capture_default_str();
  check->add_flag("--allow-fewer-gpus", args.allow_fewer_gpus,
                  "Exit 0 with a note (not a failure) where fewer than --ep-size GPUs are visible");
}

#ifndef MOERUN_HAS_NCCL

int ep_check_command(const EpCheckArgs&) {
  throw ResourceError("ep-check: this build has no NCCL (configure with NCCL >= 2.28 found)");
}

#else

namespace {

using cuda::DeviceBuffer;

// Small shapes of the two dtypes (E a multiple of every --ep-size up to 32).
std::vector<std::pair<std::string, MoeConfig> > models() {
  MoeConfig fp8 = model_preset("deepseek-v3");
  fp8.hidden_size = 256;
  fp8.intermediate_size = 256;
  fp8.num_experts = 64;
  fp8.routing.top_k = 4;
  MoeConfig bf16 = model_preset("qwen3-30b-a3b");
  bf16.hidden_size = 128;
  bf16.intermediate_size = 96;
  bf16.num_experts = 64;
  bf16.routing.top_k = 4;
  return {{"fp8", fp8}, {"bf16", bf16}};
}

struct RankInputs {
  HostTensor hidden;
  cpu::TopK routing;
};

RankInputs make_inputs(const MoeConfig& c, const MoeWeights& host, std::int64_t tokens,
                       std::uint64_t seed) {
  RankInputs in{random_hidden_states(tokens, c.hidden_size, seed), {}};
  in.routing =
      cpu::route(c.routing, c.num_experts, random_router_logits(tokens, c.num_experts, seed).view(),
                 host.correction_bias);
  return in;
}

class Checker {
 public:
  Checker(const EpCheckArgs& args, int rank) : args_(args), rank_(rank) {}
  int failures() const { return failures_; }

  void report(const std::string& name, bool ok, const std::string& detail) {
    if (!ok) {
      std::fprintf(stderr, "rank %d: %s: FAILED (%s)\n", rank_, name.c_str(), detail.c_str());
      ++failures_;
    } else if (rank_ == 0) {
      std::printf("%-58s ok (%s)\n", name.c_str(), detail.c_str());
      std::fflush(stdout);
    }
  }

  // Every case of one model on one group.
  void run(const EpGroup& group, const std::string& group_name, const std::string& model,
           MoeConfig config) {
    const int ranks = group.size();
    const HostMoeWeights host = random_weights(config, config.num_experts, args_.seed);
    const cuda::DeviceMoeWeights all = cuda::upload_weights(host.view());
    config.ep_size = ranks;
    const ExpertPlacement placement = ExpertPlacement::round_robin(config.num_experts, ranks);
    std::vector<int> mine;
    for (int l = 0; l < placement.num_local_experts(); ++l) {
      mine.push_back(placement.global_id(rank_, l));
    }
    const HostMoeWeights local_host = gather_experts(host.view(), mine);
    const cuda::DeviceMoeWeights local = cuda::upload_weights(local_host.view());
    const std::int64_t k = config.top_k();
    for (const EpBackend backend : {EpBackend::kAllToAll, EpBackend::kStandard}) {
      for (const LayoutChoice layout : {LayoutChoice::kMasked, LayoutChoice::kContiguous}) {
        const bool all_to_all = backend == EpBackend::kAllToAll;
        // All-to-all: the last rank holds no tokens; standard: every rank the same batch.
        const std::int64_t tokens =
            all_to_all && rank_ == ranks - 1 && ranks > 1 ? 0 : args_.tokens;
        const std::uint64_t seed = args_.seed * 7919 + (all_to_all ? rank_ : 0);
        RankInputs in = make_inputs(config, host.view(), tokens, seed);
        if (tokens > 0 && (rank_ == 0 || !all_to_all)) {
          add_ep_routing_cases(placement, tokens, static_cast<int>(k), in.routing.ids.data<int>());
        }
        EpOptions options;
        options.backend = backend;
        options.layout = layout;
        options.max_tokens_per_rank = args_.tokens;
        options.expert_maps = {placement.expert_map(rank_)};
        options.timeout_s = 30.0;
        const std::string name = group_name + " " + model + " " +
                                 std::string(ep_backend_name(backend)) + " " +
                                 (layout == LayoutChoice::kMasked ? "masked" : "contiguous");
        for (int pass = 0; pass < 2; ++pass) {
          // Pass 1: rank ranks / 2 receives nothing.
          if (pass == 1) {
            starve_rank(placement, ranks / 2, in.routing.ids.numel(), in.routing.ids.data<int>());
          }
          const HostTensor want = single_rank(config, all.view(), in, layout);
          const std::vector<bool> overlaps = all_to_all && layout == LayoutChoice::kMasked
                                                 ? std::vector<bool>{false, true}
                                                 : std::vector<bool>{false};
          for (const bool overlap : overlaps) {
            options.overlap = overlap;
            EpLayer layer(group, config, {local.view()}, options);
            const HostTensor got = forward(layer, config, in);
            const std::string what =
                name + (overlap ? " overlap" : "") + (pass == 1 ? " (a rank starved)" : "");
            if (all_to_all) {
              const bool same =
                  got.nbytes() == want.nbytes() &&
                  std::memcmp(got.view().data(), want.view().data(), got.nbytes()) == 0;
              report(what, same, same ? "bitwise" : "differs from the single-rank layer");
            } else {
              const double error = relative_error(got.view(), want.view());
              char detail[64];
              std::snprintf(detail, sizeof detail, "relative error %.2e", error);
              report(what, error <= kStandardEpVsSingleRank, detail);
            }
          }
        }
      }
    }
  }

 private:
  // The single-rank layer with all E experts on this rank's GPU, on this rank's tokens.
  static HostTensor single_rank(MoeConfig config, const MoeWeights& all, const RankInputs& in,
                                LayoutChoice layout) {
    config.ep_size = 1;
    const std::int64_t tokens = in.hidden.size(0);
    HostTensor out(DType::kBF16, {tokens, config.hidden_size});
    if (tokens == 0) return out;
    cuda::LayerBackend layer(config, all, {Backend::kCuda, layout, tokens, false, 0});
    const DeviceBuffer h = DeviceBuffer::upload(in.hidden.view());
    const DeviceBuffer i = DeviceBuffer::upload(in.routing.ids.view());
    const DeviceBuffer w = DeviceBuffer::upload(in.routing.weights.view());
    DeviceBuffer o(DType::kBF16, {tokens, config.hidden_size});
    layer.forward_routed(h.view(), TopKRouting{i.view(), w.view()}, o.view(), nullptr,
                         layer.owned_workspace());
    return o.download();
  }

  static HostTensor forward(EpLayer& layer, const MoeConfig& config, const RankInputs& in) {
    const std::int64_t tokens = in.hidden.size(0);
    const DeviceBuffer h = DeviceBuffer::upload(in.hidden.view());
    const DeviceBuffer i = DeviceBuffer::upload(in.routing.ids.view());
    const DeviceBuffer w = DeviceBuffer::upload(in.routing.weights.view());
    DeviceBuffer o(DType::kBF16, {tokens, config.hidden_size});
    // Poisoned: an element the forward does not write can never pass.
    MOERUN_CUDA_CHECK(cudaMemset(o.view().data(), 0xff, o.view().nbytes()));
    const std::vector<EpRankIO> io = {{h.view(), i.view(), w.view(), o.view()}};
    layer.forward_routed(io, nullptr);
    MOERUN_CUDA_CHECK(cudaDeviceSynchronize());
    layer.check();
    return o.download();
  }

  const EpCheckArgs& args_;
  int rank_;
  int failures_ = 0;
};

int check_rank(const EpCheckArgs& args, int rank, const EpUniqueId& id) {
  Checker checker(args, rank);
  // The caller's communicator first (what a server holds): made here from the launcher's id.
  ncclUniqueId nccl_id;
  std::memcpy(&nccl_id, id.bytes.data(), sizeof nccl_id);
  ncclComm_t comm = nullptr;
  MOERUN_NCCL_CHECK(ncclCommInitRank(&comm, args.ep_size, nccl_id, rank), nullptr);
  {
    const EpGroup group = EpGroup::from_nccl(comm);
    for (const auto& [model, config] : models()) checker.run(group, "caller comm", model, config);
  }
  // Then a group moerun makes, from a second id that rank 0 broadcasts over the first.
  EpUniqueId second = rank == 0 ? EpGroup::new_unique_id() : EpUniqueId{};
  char* device = nullptr;
  MOERUN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&device), second.bytes.size()));
  MOERUN_CUDA_CHECK(
      cudaMemcpy(device, second.bytes.data(), second.bytes.size(), cudaMemcpyHostToDevice));
  MOERUN_NCCL_CHECK(ncclBroadcast(device, device, second.bytes.size(), ncclChar, 0, comm, nullptr),
                    comm);
  MOERUN_CUDA_CHECK(
      cudaMemcpy(second.bytes.data(), device, second.bytes.size(), cudaMemcpyDeviceToHost));
  MOERUN_CUDA_CHECK(cudaFree(device));
  {
    const EpGroup group = EpGroup::create_nccl(second, rank, args.ep_size);
    for (const auto& [model, config] : models()) checker.run(group, "moerun comm", model, config);
  }
  ncclCommDestroy(comm);
  if (rank == 0) std::printf("rank 0: %d failures\n", checker.failures());
  return checker.failures() == 0 ? 0 : 1;
}

}  // namespace

int ep_check_command(const EpCheckArgs& args) {
  const int gpus = visible_gpus();
  if (gpus == 0) throw ResourceError("ep-check: no usable CUDA device visible");
  if (gpus < args.ep_size) {
    const std::string why = "ep-check: --ep-size " + std::to_string(args.ep_size) + " needs " +
                            std::to_string(args.ep_size) + " GPUs, " + std::to_string(gpus) +
                            " visible";
    if (args.allow_fewer_gpus) {
      std::printf("%s: not run (--allow-fewer-gpus)\n", why.c_str());
      return 0;
    }
    throw ResourceError(why);
  }
  std::printf("moerun ep-check: %d ranks (one process per GPU), %lld tokens per rank, seed %llu\n",
              args.ep_size, static_cast<long long>(args.tokens),
              static_cast<unsigned long long>(args.seed));
  const int code = run_ranks(
      args.ep_size, [&](int rank, const EpUniqueId& id) { return check_rank(args, rank, id); });
  std::printf("ep-check: %s\n", code == 0 ? "all ranks passed" : "FAILED");
  return code;  // a rank's: 1 a mismatch, 2 or 3 its error (exit_codes.h)
}

#endif  // MOERUN_HAS_NCCL

}  // namespace moerun::tools
