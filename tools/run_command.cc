#include "run_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "cli_options.h"
#include "core/parallel.h"
#include "core/synthetic.h"
#include "core/tolerances.h"
#include "cpu/routing.h"
#include "layer_runner.h"
#include "moerun/errors.h"
#include "moerun/layer.h"
#include "progress.h"
#include "reference_check.h"

namespace moerun::tools {

void add_run_command(CLI::App& app, RunArgs& args) {
  CLI::App* run = app.add_subcommand(
      "run",
      "Run one MoE layer forward on seeded random weights and inputs, and report time, tokens/s "
      "and the relative error against an fp64 dense reference. With no options: a small "
      "DeepSeek-style FP8 layer (H 1024, I 512, E 32, k 8, grouped routing), 256 tokens. "
      "Exit code 0: error within tolerance; 1: above it; 2: bad input; 3: no usable device, a CUDA "
      "error or out of memory.");
  std::string models;
  for (const auto& n : model_preset_names()) models += (models.empty() ? "" : ", ") + n;
  run->add_option("--model", args.model,
                  "Layer shape: " + models +
                      "; or a Hugging Face checkpoint directory (config.json + safetensors)")
      ->check(model_validator())
      ->capture_default_str();
  run->add_option("--tokens", args.tokens,
                  "Tokens in the batch (T). Default 256; on the CPU backend fewer for large layers "
                  "(the largest power of two whose expert math stays within 8 GFLOP, at least 8: "
                  "8 for deepseek-v3 and mixtral-8x7b, 64 for qwen3-30b-a3b)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 24));
  run->add_option(
         "--ep-size", args.ep_size,
         "Expert-parallel ranks (must divide the expert count): simulated by the oracle on "
         "the CPU, virtual ranks of one expert-parallel layer on CUDA")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  run->add_option("--ep-backend", args.ep_backend,
                  "standard (every rank sees every token; partial outputs are summed) or "
                  "all-to-all (rank r holds its share of the tokens, sent to the experts' ranks)")
      ->check(CLI::IsMember({"standard", "all-to-all"}))
      ->capture_default_str();
  run->add_option("--layout", args.layout,
                  "Permuted layout: masked (decode), contiguous (prefill) or auto")
      ->check(CLI::IsMember({"masked", "contiguous", "auto"}))
      ->capture_default_str();
  run->add_option("--backend", args.backend,
                  "cpu, cuda, or auto (cuda when a usable device is visible; weights are put on "
                  "it: generated there for presets, uploaded for checkpoints)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  run->add_option("--reference", args.reference,
                  "Rows checked against the fp64 dense reference: sampled (default: 16 rows spread "
                  "over the batch), full (every row; minutes for large layers) or none")
      ->check(CLI::IsMember({"full", "sampled", "none"}));
  run->add_option("--seed", args.seed, "Seed of the random weights and inputs")
      ->capture_default_str();
  run->add_option("--repeat", args.repeat,
                  "Timed forwards; the median is reported (the time covers the forward only, the "
                  "EP ranks' reduction or combine included: no copy back)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  run->add_flag("--json", args.json, "Print one JSON object instead of text");
  run->add_flag("--no-finite-checks", args.no_finite_checks,
                "Skip the checks that reject NaN/Inf weights, FP8 scales <= 0 and non-finite "
                "inputs (checkpoints: at load, naming file and tensor; presets: in the layer). A "
                "checkpoint run still refuses to write a non-finite output");
  add_checkpoint_run_options(*run, args.checkpoint);
}

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int run_command(const RunArgs& args) {
  if (is_checkpoint_dir(args.model)) {
    // A checkpoint's ranks are simulated in the standard mode only (checkpoint_runner.h).
    check_arg(args.ep_backend == "standard", "--ep-backend", "standard with --model DIR",
              args.ep_backend);
    return run_checkpoint(args);
  }
  check_arg(!args.checkpoint.any_set(), "options",
            "--layer/--input/--output/--ep-rank/"
            "--save-routing/--quantize/--check only with --model DIR",
            "a preset model");
  MoeConfig config = model_preset(args.model);
  config.ep_size = args.ep_size;
  config.validate();
  // Before any weight is made: is the backend asked for there at all?
  const Backend asked = parse_backend(args.backend);
  const Backend backend = resolve_backend(asked);
  const std::int64_t tokens = args.tokens >= 0 ? args.tokens : default_tokens(config, backend);
  const ReferenceRows reference =
      parse_reference(args.reference.empty() ? "sampled" : args.reference);
  const int experts = config.num_experts;

  const HostTensor hidden = random_hidden_states(tokens, config.hidden_size, args.seed);
  const HostTensor logits = random_router_logits(tokens, experts, args.seed);
  LayerOptions options;
  options.backend = backend;
  options.layout = parse_layout(args.layout);
  options.check_finite = !args.no_finite_checks;
  const EpBackend ep_backend =
      args.ep_backend == "all-to-all" ? EpBackend::kAllToAll : EpBackend::kStandard;
  std::optional<LayerRunner> runner;
  HostMoeWeights host;
  cpu::TopK routing;
  if (backend == Backend::kCuda) {
    Progress progress("generating weights on the device");
    runner.emplace(
        LayerRunner::with_device_weights(config, args.seed, tokens, options, ep_backend));
    progress.done();
    const HostTensor bias = runner->correction_bias();
    routing = cpu::route(config.routing, experts, logits.view(), bias.view());
  } else {
    // The routing comes from random logits, not from the weights, so it is known first: only
    // the experts it reaches are generated (the layer never reads the others).
    const HostTensor bias = config.routing.mode == RoutingMode::kGroupedTopK
                                ? random_correction_bias(config, args.seed)
                                : HostTensor();
    routing = cpu::route(config.routing, experts, logits.view(), bias.view());
    const std::vector<bool> used =
        experts_of_rows(routing.ids.view(), reference_rows(ReferenceRows::kFull, tokens), experts);
    Progress progress("generating weights");
    host = random_weights(
        config, experts, args.seed, [&](double f) { progress.update(f); }, used);
    progress.done();
    runner.emplace(config, host.view(), tokens, options, ep_backend);
  }
  const Layout layout = runner->layout();
  runner->set_inputs(hidden.view(), routing.ids.view(), routing.weights.view());
  // CUDA: one untimed forward first (module load, first touch of the workspace).
  if (backend == Backend::kCuda) runner->run();

  std::vector<double> seconds;
  Progress forward_progress("forward");
  for (int i = 0; i < args.repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    runner->run();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    forward_progress.update(static_cast<double>(i + 1) / args.repeat);
  }
  forward_progress.done();
  const double time_s = median(seconds);
  const HostTensor out = runner->output();

  std::optional<ReferenceResult> checked;
  const std::vector<std::int64_t> rows = reference_rows(reference, tokens);
  if (!rows.empty()) {
    MoeConfig all = config;
    all.ep_size = 1;
    all.ep_rank = 0;
    const MoeWeights weights =
        runner->host_weights(experts_of_rows(routing.ids.view(), rows, experts));
    Progress progress("fp64 dense reference (" + std::to_string(rows.size()) + " rows)");
    checked = check_rows(out.view(), hidden.view(),
                         {{all, weights, routing.ids.view(), routing.weights.view()}}, rows,
                         /*also_unquantized=*/true, [&](double f) { progress.update(f); });
  }
  const double tolerance = layer_tolerance(config.weight_dtype);
  const bool ok = !checked || checked->error <= tolerance;
  const double tokens_per_s = time_s > 0 ? static_cast<double>(tokens) / time_s : 0.0;
  const std::string why = backend_reason(asked, backend);

  if (args.json) {
    nlohmann::json j;
    j["model"] = args.model;
    j["config"] = describe(config);
    j["tokens"] = tokens;
    j["ep_size"] = config.ep_size;
    j["ep_backend"] = args.ep_backend;
    j["backend"] = backend_name(backend);
    j["backend_reason"] = why;
    if (backend == Backend::kCpu) j["cuda"] = cuda_unavailable_reason();
    j["cpu_threads"] = detail::cpu_threads();
    j["layout"] = layout_name(layout);
    j["time_s"] = time_s;
    j["tokens_per_s"] = tokens_per_s;
    j["reference"] = {{"mode", reference_rows_name(reference)},
                      {"rows", static_cast<std::int64_t>(rows.size())}};
    if (checked) {
      j["relative_error"] = checked->error;
      j["tolerance"] = tolerance;
      if (checked->error_vs_unquantized) {
        j["error_vs_unquantized_activations"] = *checked->error_vs_unquantized;
      }
    }
    j["ok"] = ok;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("moerun run\n");
    std::printf("  model      %s: %s\n", args.model.c_str(), describe(config).c_str());
    std::printf("  tokens     %lld%s\n", static_cast<long long>(tokens),
                args.tokens < 0 ? " (default; --tokens to change)" : "");
    if (backend == Backend::kCuda) {
      std::printf("  backend    cuda (%s)\n", why.c_str());
    } else {
      std::printf("  backend    cpu, %d threads (%s)\n", detail::cpu_threads(), why.c_str());
    }
    std::printf("  layout     %s\n", std::string(layout_name(layout)).c_str());
    std::printf("  time       %.3f ms (median of %d; the forward only)\n", time_s * 1e3,
                args.repeat);
    std::printf("  tokens/s   %.1f\n", tokens_per_s);
    if (checked) {
      std::printf(
          "  error      %.3e relative to the fp64 dense reference on %lld of %lld rows "
          "(tolerance %.1e): %s\n",
          checked->error, static_cast<long long>(checked->rows), static_cast<long long>(tokens),
          tolerance, ok ? "ok" : "ABOVE TOLERANCE");
      if (checked->error_vs_unquantized) {
        std::printf(
            "  fp8 cost   %.3e relative to the same reference with unquantized activations\n",
            *checked->error_vs_unquantized);
      }
    } else {
      std::printf("  error      not checked (--reference none)\n");
    }
  }
  return ok ? 0 : 1;
}

}  // namespace moerun::tools
