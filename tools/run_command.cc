#include "run_command.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "cli_options.h"
#include "core/metrics.h"
#include "core/parallel.h"
#include "core/synthetic.h"
#include "core/tolerances.h"
#include "cpu/dense_reference.h"
#include "cpu/layer.h"
#include "cpu/routing.h"
#include "layer_runner.h"
#include "moerun/errors.h"
#include "moerun/layer.h"
#include "progress.h"

namespace moerun::tools {

void add_run_command(CLI::App& app, RunArgs& args) {
  CLI::App* run = app.add_subcommand(
      "run",
      "Run one MoE layer forward on seeded random weights and inputs, and report time, tokens/s "
      "and the relative error against an fp64 dense reference. With no options: a small "
      "DeepSeek-style FP8 layer (H 1024, I 512, E 32, k 8, grouped routing), 256 tokens. "
      "Exit code 0: error within tolerance; 1: above it; 2: bad arguments or a failure.");
  std::string models;
  for (const auto& n : model_preset_names()) models += (models.empty() ? "" : ", ") + n;
  run->add_option("--model", args.model,
                  "Layer shape: " + models +
                      "; or a Hugging Face checkpoint directory (config.json + safetensors)")
      ->check(model_validator())
      ->capture_default_str();
  run->add_option("--tokens", args.tokens, "Tokens in the batch (T)")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 24))
      ->capture_default_str();
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
                  "cpu, cuda, or auto (cuda when a usable device is visible; weights are uploaded "
                  "to it)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  run->add_option("--seed", args.seed, "Seed of the random weights and inputs")
      ->capture_default_str();
  run->add_option("--repeat", args.repeat, "Timed forwards; the median is reported")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  run->add_flag("--json", args.json, "Print one JSON object instead of text");
  add_checkpoint_run_options(*run, args.checkpoint);
}

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int run_command(const RunArgs& args) {
  if (is_checkpoint_dir(args.model)) return run_checkpoint(args);
  check_arg(!args.checkpoint.any_set(), "options",
            "--layer/--input/--output/--ep-rank/"
            "--save-routing/--quantize/--check only with --model DIR",
            "a preset model");
  MoeConfig config = model_preset(args.model);
  config.ep_size = args.ep_size;
  config.validate();
  const std::int64_t tokens = args.tokens;
  // Before minutes of weight generation: is the backend asked for there at all?
  const Backend backend = resolve_backend(parse_backend(args.backend));

  Progress weight_progress("generating weights");
  const HostMoeWeights weights = random_weights(config, config.num_experts, args.seed,
                                                [&](double f) { weight_progress.update(f); });
  const HostTensor hidden = random_hidden_states(tokens, config.hidden_size, args.seed);
  const HostTensor logits = random_router_logits(tokens, config.num_experts, args.seed);
  const MoeWeights all = weights.view();
  const cpu::TopK routing =
      cpu::route(config.routing, config.num_experts, logits.view(), all.correction_bias);

  LayerOptions options;
  options.backend = backend;
  options.layout = parse_layout(args.layout);
  const EpBackend ep_backend =
      args.ep_backend == "all-to-all" ? EpBackend::kAllToAll : EpBackend::kStandard;
  LayerRunner runner(config, all, tokens, options, ep_backend);
  const Layout layout = runner.layout();
  runner.set_inputs(hidden.view(), routing.ids.view(), routing.weights.view());
  // CUDA: one untimed forward first (module load, first touch of the workspace).
  if (runner.backend() == Backend::kCuda) runner.run();

  std::vector<double> seconds;
  for (int i = 0; i < args.repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    runner.run();
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double time_s = median(seconds);

  Progress reference_progress("fp64 dense reference");
  const std::vector<double> reference = cpu::dense_reference(
      config, all, hidden.view(), routing.ids.view(), routing.weights.view(),
      cpu::ActivationQuantization::kRecipe, [&](double f) { reference_progress.update(f); });
  const HostTensor& out = runner.output();
  const double error = relative_error(out.view(), reference);
  // What the FP8 recipe itself costs: the same layer with exact (unquantized) activations.
  std::optional<double> recipe_error;
  if (config.is_fp8()) {
    Progress exact_progress("fp64 dense reference, unquantized activations");
    recipe_error = relative_error(
        out.view(), cpu::dense_reference(config, all, hidden.view(), routing.ids.view(),
                                         routing.weights.view(), cpu::ActivationQuantization::kNone,
                                         [&](double f) { exact_progress.update(f); }));
  }
  const double tolerance = layer_tolerance(config.weight_dtype);
  const bool ok = error <= tolerance;
  const double tokens_per_s = time_s > 0 ? static_cast<double>(tokens) / time_s : 0.0;

  if (args.json) {
    nlohmann::json j;
    j["model"] = args.model;
    j["config"] = describe(config);
    j["tokens"] = tokens;
    j["ep_size"] = config.ep_size;
    j["ep_backend"] = args.ep_backend;
    j["backend"] = backend_name(backend);
    if (backend == Backend::kCpu && args.backend == "auto") j["cuda"] = cuda_unavailable_reason();
    j["cpu_threads"] = detail::cpu_threads();
    j["layout"] = layout_name(layout);
    j["time_s"] = time_s;
    j["tokens_per_s"] = tokens_per_s;
    j["relative_error"] = error;
    j["tolerance"] = tolerance;
    j["ok"] = ok;
    if (recipe_error) j["error_vs_unquantized_activations"] = *recipe_error;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("moerun run\n");
    std::printf("  model      %s: %s\n", args.model.c_str(), describe(config).c_str());
    std::printf("  tokens     %lld\n", static_cast<long long>(tokens));
    if (backend == Backend::kCuda) {
      std::printf("  backend    cuda\n");
    } else {
      std::printf("  backend    cpu (%d threads)%s%s\n", detail::cpu_threads(),
                  args.backend == "auto" ? "; cuda: " : "",
                  args.backend == "auto" ? cuda_unavailable_reason().c_str() : "");
    }
    std::printf("  layout     %s\n", std::string(layout_name(layout)).c_str());
    std::printf("  time       %.3f ms (median of %d)\n", time_s * 1e3, args.repeat);
    std::printf("  tokens/s   %.1f\n", tokens_per_s);
    std::printf("  error      %.3e relative to the fp64 dense reference (tolerance %.1e): %s\n",
                error, tolerance, ok ? "ok" : "ABOVE TOLERANCE");
    if (recipe_error) {
      std::printf("  fp8 cost   %.3e relative to the same reference with unquantized activations\n",
                  *recipe_error);
    }
  }
  return ok ? 0 : 1;
}

}  // namespace moerun::tools
