#include "bench_command.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench_ep.h"
#include "cli_options.h"
#include "cuda/stages.h"
#include "moerun/config.h"
#include "moerun/errors.h"
#ifdef MOERUN_HAS_CUDA
#include <cuda_runtime_api.h>

#include "bench_ceilings.h"
#include "bench_layer.h"
#include "bench_timing.h"
#include "core/layer_floor.h"
#include "cuda/cuda_check.h"
#include "cuda/runtime.h"
#endif

namespace moerun::tools {

namespace {

const std::vector<std::string> kDefaultModels = {"deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b"};
const std::vector<std::int64_t> kDefaultTokens = {1, 8, 32, 128, 512, 2048, 8192, 32768};

std::vector<std::string> stage_choices() {
  std::vector<std::string> names = {"all", "layer"};
  for (int s = 0; s < cuda::kNumStages; ++s) {
    names.emplace_back(cuda::stage_name(static_cast<cuda::Stage>(s)));
  }
  return names;
}

}  // namespace

void add_bench_command(CLI::App& app, BenchArgs& args) {
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Time each stage (routing, dispatch+permute+quantize, gate-up GEMM, SiLU-and-mul, down "
      "GEMM, combine) and the whole layer on the CUDA backend, with random weights and inputs "
      "generated on the device. Each line: us, TFLOP/s (GEMMs, rows actually routed), GB/s "
      "(bytes the stage must move, routed experts only) and % of the copy bandwidth and matrix "
      "rates measured in the same run, and the layer against its floor (the used experts' "
      "weights at the copy bandwidth, the GEMM FLOPs at the matrix rate). Medians of --repeat "
      "event-timed CUDA graph replays after warm-up, inputs rotated over more than 2x L2.");
  std::string models;
  for (const auto& n : model_preset_names()) models += (models.empty() ? "" : ", ") + n;
  bench
      ->add_option(
          "--model", args.models,
          "Model shapes (" + models + "); default: deepseek-v3, qwen3-30b-a3b, mixtral-8x7b")
      ->check(CLI::IsMember(model_preset_names()))
      ->delimiter(',');
  bench
      ->add_option("--tokens", args.tokens,
                   "Token counts T (comma list); default 1,8,32,128,512,2048,8192,32768, each "
                   "skipped with the reason printed where device memory does not allow it")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 20))
      ->delimiter(',');
  bench
      ->add_option("--ep-size", args.ep_size,
                   "R ranks: without --ep-backend, one rank's share (E/R local experts, routing "
                   "still over all E); with it, the expert-parallel layer over R ranks")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  bench
      ->add_option("--ep-backend", args.ep_backend,
                   "Time the expert-parallel layer over --ep-size ranks: dispatch, expert compute, "
                   "combine and total per phase, bytes moved and bandwidth, single-batch overlap "
                   "off and on (all-to-all, masked); --tokens are per rank (standard: every rank "
                   "holds the R x T batch); default model deepseek-v3, tokens 128,4096")
      ->check(CLI::IsMember({"standard", "all-to-all"}));
  bench
      ->add_option("--ep-transport", args.ep_transport,
                   "virtual: all ranks on this GPU; nccl: one process per GPU (GPU r for rank r)")
      ->check(CLI::IsMember({"virtual", "nccl"}))
      ->capture_default_str();
  bench->add_option("--stage", args.stage, "all, layer, or one stage")
      ->check(CLI::IsMember(stage_choices()))
      ->capture_default_str();
  bench->add_option("--layout", args.layout, "masked, contiguous or auto")
      ->check(CLI::IsMember({"masked", "contiguous", "auto"}))
      ->capture_default_str();
  bench->add_option("--repeat", args.repeat, "Timed runs per measurement; the median is reported")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  bench->add_option("--seed", args.seed, "Seed of the random weights and inputs")
      ->capture_default_str();
  bench->add_flag("--json", args.json, "Print one JSON object instead of text");
  bench->add_flag("--no-graph", args.no_graph, "Time plain launches instead of graph replays");
  bench->add_flag("--no-finite-checks", args.no_finite_checks,
                  "Time the layer without its finiteness check of the inputs (on by default; "
                  "timed with the routing stage)");
  bench->add_flag("--skip-ceilings", args.skip_ceilings,
                  "Do not measure the ceilings (no % columns); for profilers");
}

#ifndef MOERUN_HAS_CUDA

int bench_command(const BenchArgs& args) {
  if (!args.ep_backend.empty()) return ep_bench_command(args);
  throw ResourceError("bench: this build has no CUDA backend (configure with nvcc available)");
}

#else

namespace {

using nlohmann::json;

struct Metrics {
  double us, gbs, tflops, pct_copy, pct_matrix;
};

Metrics metrics(const Measure& m, const std::optional<Ceilings>& ceilings, bool fp8) {
  const double s = m.us * 1e-6;
  Metrics r{m.us, s > 0 ? m.bytes / s * 1e-9 : 0, s > 0 ? m.flops / s * 1e-12 : 0, NAN, NAN};
  if (ceilings) {
    r.pct_copy = 100.0 * r.gbs / ceilings->copy_gbs;
    const double rate = fp8 ? ceilings->fp8_tflops : ceilings->bf16_tflops;
    if (m.flops > 0 && rate > 0) r.pct_matrix = 100.0 * r.tflops / rate;
  }
  return r;
}

json metrics_json(const Measure& m, const std::optional<Ceilings>& ceilings, bool fp8) {
  const Metrics x = metrics(m, ceilings, fp8);
  json j = {{"us", x.us}, {"gbs", x.gbs}, {"bytes", m.bytes}};
  if (m.flops > 0) {
    j["tflops"] = x.tflops;
    j["flops"] = m.flops;
  }
  if (std::isfinite(x.pct_copy)) j["pct_copy"] = x.pct_copy;
  if (std::isfinite(x.pct_matrix)) j["pct_matrix"] = x.pct_matrix;
  return j;
}

std::string cell(double v, const char* format) {
  if (!std::isfinite(v)) return "-";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, format, v);
  return buffer;
}

void print_line(const char* name, const Measure& m, const std::optional<Ceilings>& ceilings,
                bool fp8) {
  const Metrics x = metrics(m, ceilings, fp8);
  std::printf("  %-18s %10.1f %9s %9.0f %7s %8s\n", name, x.us,
              cell(m.flops > 0 ? x.tflops : NAN, "%.1f").c_str(), x.gbs,
              cell(x.pct_copy, "%.1f").c_str(), cell(x.pct_matrix, "%.1f").c_str());
}

// The layer against its floor (core/layer_floor.h) and against its two GEMM stages.
struct FloorReport {
  LayerFloor floor;
  double copy_gbs = 0, matrix_tflops = 0;
  double gemms_us = NAN;  // gate-up + down stages, when the stages were timed
};

FloorReport floor_report(const MoeConfig& config, const CaseResult& r, const Ceilings& ceilings,
                         bool stages_timed) {
  const Measure& gate_up = r.stages[static_cast<std::size_t>(cuda::Stage::kGateUp)];
  const Measure& down = r.stages[static_cast<std::size_t>(cuda::Stage::kDown)];
  FloorReport f;
  f.copy_gbs = ceilings.copy_gbs;
  f.matrix_tflops = config.is_fp8() ? ceilings.fp8_tflops : ceilings.bf16_tflops;
  f.floor =
      layer_floor(config, r.experts_used, gate_up.flops + down.flops, f.copy_gbs, f.matrix_tflops);
  if (stages_timed) f.gemms_us = gate_up.us + down.us;
  return f;
}

json floor_json(const FloorReport& f, double layer_us) {
  json j = {{"hbm_us", f.floor.hbm_us},
            {"gemm_us", f.floor.gemm_us},
            {"us", f.floor.us()},
            {"copy_gbs", f.copy_gbs},
            {"matrix_tflops", f.matrix_tflops}};
  if (f.floor.us() > 0) j["layer_over_floor"] = layer_us / f.floor.us();
  if (std::isfinite(f.gemms_us) && f.gemms_us > 0) {
    j["gemm_stages_us"] = f.gemms_us;
    j["layer_over_gemm_stages"] = layer_us / f.gemms_us;
  }
  return j;
}

void print_floor(const FloorReport& f, double experts_used, double layer_us) {
  std::printf(
      "  %-18s %10.1f us: weights of %.1f experts at %.0f GB/s %.1f us, GEMM FLOPs at "
      "%.0f TFLOP/s %.1f us",
      "floor", f.floor.us(), experts_used, f.copy_gbs, f.floor.hbm_us, f.matrix_tflops,
      f.floor.gemm_us);
  if (f.floor.us() > 0) std::printf("; layer %.2fx", layer_us / f.floor.us());
  if (std::isfinite(f.gemms_us) && f.gemms_us > 0) {
    std::printf("; layer %.2fx its GEMM stages (%.1f us)", layer_us / f.gemms_us, f.gemms_us);
  }
  std::printf("\n");
}

}  // namespace

int bench_command(const BenchArgs& args) {
  // First: the NCCL transport forks its ranks before anything touches CUDA.
  if (!args.ep_backend.empty()) return ep_bench_command(args);
  const std::string reason = cuda::device_unavailable_reason();
  if (!reason.empty()) throw ResourceError("bench: no usable CUDA device: " + reason);
  const std::vector<std::string>& models = args.models.empty() ? kDefaultModels : args.models;
  const std::vector<std::int64_t>& tokens = args.tokens.empty() ? kDefaultTokens : args.tokens;
  const bool all = args.stage == "all";
  const bool time_layer = all || args.stage == "layer";
  const bool time_stages = args.stage != "layer";

  int device = 0;
  cudaDeviceProp prop{};
  MOERUN_CUDA_CHECK(cudaGetDevice(&device));
  MOERUN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  cudaStream_t stream = nullptr;
  MOERUN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() { cudaStreamDestroy(s); }
  } guard{stream};

  json report = {{"device", prop.name},          {"sms", prop.multiProcessorCount},
                 {"l2_bytes", prop.l2CacheSize}, {"date", utc_now()},
                 {"graphs", !args.no_graph},     {"finite_checks", !args.no_finite_checks},
                 {"repeat", args.repeat},        {"stage", args.stage}};
  std::optional<Ceilings> ceilings;
  if (!args.skip_ceilings) {
    std::fprintf(stderr, "bench: measuring ceilings\n");
    ceilings = measure_ceilings(args.repeat, stream);
  }
  report["ceilings"] = ceilings_json(ceilings);
  if (!args.json) {
    std::printf("moerun bench: %s (%d SMs, L2 %d MiB), %s; %s, median of %d\n", prop.name,
                prop.multiProcessorCount, prop.l2CacheSize >> 20, utc_now().c_str(),
                args.no_graph ? "plain launches" : "CUDA graph replays", args.repeat);
    if (ceilings) print_ceilings(*ceilings);
    std::fflush(stdout);
  }

  json results = json::array(), skipped = json::array();
  auto skip = [&](const std::string& model, std::int64_t t, const std::string& why) {
    skipped.push_back({{"model", model}, {"tokens", t}, {"reason", why}});
    if (!args.json)
      std::printf("\n%s T %lld: skipped: %s\n", model.c_str(), static_cast<long long>(t),
                  why.c_str());
  };
  for (const std::string& model : models) {
    MoeConfig config = model_preset(model);
    config.ep_size = args.ep_size;
    try {
      config.validate();
    } catch (const Error& e) {
      for (const std::int64_t t : tokens) skip(model, t, e.what());
      continue;
    }
    for (const std::int64_t t : tokens) {
      BenchCase c;
      c.model = model;
      c.config = config;
      c.tokens = t;
      c.layout = parse_layout(args.layout);
      c.repeat = args.repeat;
      c.stages = time_stages;
      c.layer = time_layer;
      c.graphs = !args.no_graph;
      c.check_finite = !args.no_finite_checks;
      c.seed = args.seed;
      std::size_t free_bytes = 0, total_bytes = 0;
      MOERUN_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
      const std::size_t needed = bench_case_device_bytes(c);
      if (static_cast<double>(needed) > 0.9 * static_cast<double>(free_bytes)) {
        char why[160];
        std::snprintf(why, sizeof why, "needs %.1f GB of device memory, %.1f GB free",
                      static_cast<double>(needed) * 1e-9, static_cast<double>(free_bytes) * 1e-9);
        skip(model, t, why);
        continue;
      }
      std::fprintf(stderr, "bench: %s T %lld\n", model.c_str(), static_cast<long long>(t));
      const CaseResult r = run_bench_case(c, stream);
      const bool fp8 = config.is_fp8();

      json j = {{"model", model},
                {"tokens", t},
                {"ep_size", config.ep_size},
                {"num_experts", config.num_experts},
                {"local_experts", config.num_local_experts()},
                {"layout", layout_name(r.layout)},
                {"input_sets", r.input_sets},
                {"workspace_bytes", r.workspace_bytes},
                {"routed_rows", r.routed_rows},
                {"experts_used", r.experts_used},
                {"tokens_touched", r.tokens_touched}};
      if (!r.note.empty()) j["note"] = r.note;
      if (time_stages) {
        json stages = json::object();
        double sum = 0;
        for (int s = 0; s < cuda::kNumStages; ++s) {
          const std::string name(cuda::stage_name(static_cast<cuda::Stage>(s)));
          sum += r.stages[static_cast<std::size_t>(s)].us;
          if (all || args.stage == name) {
            stages[name] = metrics_json(r.stages[static_cast<std::size_t>(s)], ceilings, fp8);
          }
        }
        j["stages"] = stages;
        if (all) j["stage_sum_us"] = sum;
      }
      std::optional<FloorReport> floor;
      if (time_layer && ceilings && ceilings->copy_gbs > 0) {
        floor = floor_report(config, r, *ceilings, time_stages && all);
      }
      if (time_layer) {
        j["layer"] = metrics_json(r.layer, ceilings, fp8);
        j["layer_us"] = r.layer.us;
        j["layer_ms"] = r.layer.us * 1e-3;
        if (floor) j["floor"] = floor_json(*floor, r.layer.us);
      }
      results.push_back(j);

      if (!args.json) {
        std::printf(
            "\n%s T %lld, EP %d (%d of %d experts local), %s; rows %.0f, experts used %.1f, "
            "input sets %d, workspace %.2f GB\n",
            model.c_str(), static_cast<long long>(t), config.ep_size, config.num_local_experts(),
            config.num_experts, std::string(layout_name(r.layout)).c_str(), r.routed_rows,
            r.experts_used, r.input_sets, static_cast<double>(r.workspace_bytes) * 1e-9);
        if (!r.note.empty()) std::printf("  note: %s\n", r.note.c_str());
        std::printf("  %-18s %10s %9s %9s %7s %8s\n", "stage", "us", "TFLOP/s", "GB/s", "%copy",
                    "%matrix");
        double sum = 0;
        for (int s = 0; s < cuda::kNumStages; ++s) {
          const std::string name(cuda::stage_name(static_cast<cuda::Stage>(s)));
          sum += r.stages[static_cast<std::size_t>(s)].us;
          if (time_stages && (all || args.stage == name)) {
            print_line(name.c_str(), r.stages[static_cast<std::size_t>(s)], ceilings, fp8);
          }
        }
        if (all) std::printf("  %-18s %10.1f\n", "sum of stages", sum);
        if (time_layer) print_line("layer", r.layer, ceilings, fp8);
        if (floor) print_floor(*floor, r.experts_used, r.layer.us);
        std::fflush(stdout);
      }
    }
  }
  report["results"] = results;
  report["skipped"] = skipped;
  if (args.json) std::printf("%s\n", report.dump(1).c_str());
  return 0;
}

#endif  // MOERUN_HAS_CUDA

}  // namespace moerun::tools
