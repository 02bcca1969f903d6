#include "checkpoint_run.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "cli_options.h"
#include "core/checks.h"
#include "core/metrics.h"
#include "core/synthetic.h"
#include "core/tolerances.h"
#include "cpu/dense_reference.h"
#include "cpu/ep_reduce.h"
#include "cpu/router_gemm.h"
#include "cpu/routing.h"
#include "io/hf_loader.h"
#include "io/hidden_states.h"
#include "io/output_file.h"
#include "io/safetensors.h"
#include "moerun/errors.h"
#include "moerun/layer.h"
#include "remove_on_signal.h"
#include "run_command.h"

namespace moerun::tools {

bool CheckpointRunArgs::any_set() const {
  return layer >= 0 || !input.empty() || !output.empty() || ep_rank >= 0 || save_routing ||
         quantize != "none" || check;
}

bool is_checkpoint_dir(const std::string& model) {
  std::error_code ec;
  return std::filesystem::is_regular_file(std::filesystem::path(model) / "config.json", ec);
}

CLI::Validator model_validator() {
  return CLI::Validator(
      [](std::string& model) -> std::string {
        if (is_checkpoint_dir(model)) return "";
        const auto presets = model_preset_names();
        if (std::find(presets.begin(), presets.end(), model) != presets.end()) return "";
        std::string names;
        for (const auto& n : presets) names += (names.empty() ? "" : ", ") + n;
        return "--model " + model + ": neither a preset (" + names +
               ") nor a directory with a config.json";
      },
      "PRESET|DIR");
}

void add_checkpoint_run_options(CLI::App& run, CheckpointRunArgs& args) {
  const char* group = "Checkpoint (--model DIR)";
  run.add_option("--layer", args.layer, "Decoder layer to run (default: the first MoE layer)")
      ->check(CLI::NonNegativeNumber)
      ->group(group);
  run.add_option("--input", args.input,
                 "safetensors file with one [T, H] tensor (BF16, F16 or F32), any name; default: "
                 "--tokens random rows from --seed")
      ->check(CLI::ExistingFile)
      ->group(group);
  run.add_option("--output", args.output,
                 "safetensors file to write: hidden_states [T, H] (bf16; f32 with --ep-rank)")
      ->group(group);
  run.add_option("--ep-rank", args.ep_rank,
                 "Load and run only this rank's experts of --ep-size; the output is the rank's "
                 "f32 partial sum (the ranks' outputs add up to the layer output)")
      ->check(CLI::NonNegativeNumber)
      ->group(group);
  run.add_flag("--save-routing", args.save_routing,
               "Also write topk_ids [T, k] (i32) and topk_weights [T, k] (f32) to --output")
      ->group(group);
  run.add_option("--quantize", args.quantize,
                 "fp8: quantize BF16/F16/F32 experts to FP8 e4m3 (128x128 blocks) on load")
      ->check(CLI::IsMember({"none", "fp8"}))
      ->capture_default_str()
      ->group(group);
  run.add_flag("--check", args.check,
               "Compare with the fp64 dense reference (exit 1 above tolerance); not with "
               "--ep-rank")
      ->group(group);
}

namespace {

// Runs the layer once: one rank's f32 partial (`ranks` holds that rank only and ep_rank mode is
// on), or every rank with the partials summed in rank order and rounded once (standard EP).
void forward(std::vector<Layer>& ranks, bool one_rank, const TensorView& hidden,
             const cpu::TopK& routing, const HostTensor& out) {
  if (one_rank || ranks.size() == 1) {
    ranks.front().forward_routed(hidden, routing.ids.view(), routing.weights.view(), out.view());
    return;
  }
  HostTensor partial(DType::kF32, out.shape());
  cpu::PartialSum sum(out.size(0), out.size(1));
  for (auto& rank : ranks) {
    rank.forward_routed(hidden, routing.ids.view(), routing.weights.view(), partial.view());
    sum.add(partial.view());
  }
  sum.store_bf16(out.view());
}

// The tensors of --output, in file order: hidden_states, then with --save-routing the routing.
std::vector<io::TensorToWrite> output_tensors(const TensorView& out, const TensorView& ids,
                                              const TensorView& weights, bool save_routing) {
  std::vector<io::TensorToWrite> tensors{io::tensor_to_write("hidden_states", out)};
  if (save_routing) {
    tensors.push_back(io::tensor_to_write("topk_ids", ids));
    tensors.push_back(io::tensor_to_write("topk_weights", weights));
  }
  return tensors;
}

// Rejects a non-finite value the layer computed from finite inputs (an overflow in its fp32 and
// bf16 arithmetic), naming the input row it came from and that row's largest magnitude.
void check_layer_values(const TensorView& result, const char* name, const TensorView& hidden,
                        const std::string& hidden_source) {
  const std::optional<std::int64_t> bad = detail::first_non_finite(result);
  if (!bad) return;
  const std::int64_t cols = result.size(1), row = *bad / cols;
  float largest = 0.0f;
  for (std::int64_t c = 0; c < hidden.size(1); ++c) {
    largest = std::max(largest,
                       std::fabs(bf16_to_float(hidden.data_as<bf16>()[row * hidden.size(1) + c])));
  }
  char magnitude[32];
  std::snprintf(magnitude, sizeof(magnitude), "%.3g", static_cast<double>(largest));
  throw InvalidArgument("hidden states row " + std::to_string(row) + " of " + hidden_source,
                        "values the layer's fp32 and bf16 arithmetic can hold",
                        std::string(name) + detail::index_text(result.shape(), *bad) + " = " +
                            detail::value_text(result, *bad) + " (the row's largest magnitude is " +
                            magnitude + "); nothing was written");
}

}  // namespace

int run_checkpoint(const RunArgs& args) {
  const CheckpointRunArgs& ck = args.checkpoint;
  const io::HfCheckpoint checkpoint(args.model);
  int layer = ck.layer;
  if (layer < 0) {
    const std::vector<int> moe = checkpoint.config().moe_layers();
    if (moe.empty()) throw Error(checkpoint.config().source + ": no MoE layer");
    layer = moe.front();
  }
  const bool one_rank = ck.ep_rank >= 0;
  check_arg(!one_rank || ck.ep_rank < args.ep_size, "--ep-rank",
            "< --ep-size (" + std::to_string(args.ep_size) + ")", ck.ep_rank);
  check_arg(!(one_rank && ck.check), "--check",
            "without --ep-rank (the reference needs every expert)", "both");
  const bool check_finite = !args.no_finite_checks;

  // The inputs and the output come before the load, which may take minutes: a bad input, an
  // output that is an input or cannot be written, or a disk too small for it fails at once.
  const std::int64_t h = checkpoint.config().moe_config().hidden_size;
  const HostTensor hidden = ck.input.empty() ? random_hidden_states(args.tokens, h, args.seed)
                                             : io::read_hidden_states(ck.input, h, check_finite);
  const std::string hidden_source =
      ck.input.empty() ? "the random hidden states (--seed " + std::to_string(args.seed) + ")"
                       : "'" + ck.input + "'";
  const std::int64_t tokens = hidden.size(0);
  const HostTensor out(one_rank ? DType::kF32 : DType::kBF16, {tokens, h});
  const int top_k = checkpoint.config().moe_config().top_k();
  const std::map<std::string, std::string> metadata{
      {"producer", "moerun"},
      {"model", args.model},
      {"layer", std::to_string(layer)},
      {"ep_size", std::to_string(args.ep_size)},
      {"ep_rank", one_rank ? std::to_string(ck.ep_rank) : "all"}};
  std::optional<io::OutputFile> output;
  std::optional<RemoveOnSignal> remove_on_signal;
  if (!ck.output.empty()) {
    std::vector<std::filesystem::path> inputs = checkpoint.store().paths();
    inputs.push_back(checkpoint.dir() / "config.json");
    if (!ck.input.empty()) inputs.emplace_back(ck.input);
    output.emplace(ck.output, inputs);
    remove_on_signal.emplace(output->temporary_path());
    // Shapes only: the routing is not computed yet.
    const TensorView ids_shape(nullptr, DType::kI32, {tokens, top_k});
    const TensorView weights_shape(nullptr, DType::kF32, {tokens, top_k});
    output->reserve(io::safetensors_file_size(
        output_tensors(out.view(), ids_shape, weights_shape, ck.save_routing), metadata));
  }

  io::LoadOptions load_options;
  load_options.quantize_fp8 = ck.quantize == "fp8";
  load_options.ep_size = one_rank ? args.ep_size : 1;
  load_options.ep_rank = one_rank ? ck.ep_rank : 0;
  load_options.check_finite = check_finite;
  const io::LoadedMoeLayer loaded = io::load_moe_layer(checkpoint, layer, load_options);
  MoeConfig config = loaded.config;
  if (!one_rank) config.ep_size = args.ep_size;
  config.validate();

  const HostTensor logits = cpu::router_logits(hidden.view(), loaded.router_weight.view());
  check_layer_values(logits.view(), "router_logits", hidden.view(), hidden_source);
  const cpu::TopK routing =
      cpu::route(config.routing, config.num_experts, logits.view(), loaded.correction_bias.view());

  LayerOptions options;
  options.backend = parse_backend(args.backend);
  options.layout = parse_layout(args.layout);
  // The loader and read_hidden_states checked every value already, naming file and tensor.
  options.check_finite = false;
  const MoeWeights weights = loaded.weights();
  std::vector<Layer> ranks;
  if (one_rank) {
    ranks.emplace_back(config, weights, options);
  } else {
    const int local = config.num_local_experts();
    for (int r = 0; r < config.ep_size; ++r) {
      MoeConfig rank_config = config;
      rank_config.ep_rank = r;
      ranks.emplace_back(rank_config, weights.slice_experts(r * local, local), options);
    }
  }
  std::vector<double> seconds;
  for (int i = 0; i < args.repeat; ++i) {
    const auto start = std::chrono::steady_clock::now();
    forward(ranks, one_rank, hidden.view(), routing, out);
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double time_s = seconds[seconds.size() / 2];
  // Finite inputs can still overflow inside the layer: such an output is never written.
  check_layer_values(out.view(), "hidden_states", hidden.view(), hidden_source);

  if (output) {
    io::write_safetensors(
        *output,
        output_tensors(out.view(), routing.ids.view(), routing.weights.view(), ck.save_routing),
        metadata);
  }

  std::optional<double> error;
  const double tolerance = layer_tolerance(config.weight_dtype);
  if (ck.check) {
    MoeConfig all = config;
    all.ep_size = 1;
    all.ep_rank = 0;
    error = relative_error(out.view(),
                           cpu::dense_reference(all, weights, hidden.view(), routing.ids.view(),
                                                routing.weights.view()));
  }
  const bool ok = !error || *error <= tolerance;
  const io::LoadStats& stats = loaded.stats;
  const Backend backend = ranks.front().backend();
  const Layout layout = ranks.front().layout_for(tokens);
  if (args.json) {
    nlohmann::json j;
    j["model"] = args.model;
    j["model_type"] = io::model_type_name(checkpoint.config().family);
    j["layer"] = layer;
    j["config"] = describe(config);
    j["tokens"] = tokens;
    j["backend"] = backend_name(backend);
    j["layout"] = layout_name(layout);
    j["time_s"] = time_s;
    j["load"] = {{"seconds", stats.seconds},
                 {"mapped_bytes", stats.mapped_bytes},
                 {"copied_bytes", stats.copied_bytes},
                 {"converted_bytes", stats.converted_bytes},
                 {"notes", loaded.notes}};
    if (loaded.quantization) {
      j["quantization_error"] = {{"w13", loaded.quantization->w13_error},
                                 {"w2", loaded.quantization->w2_error}};
    }
    if (!ck.output.empty()) j["output"] = ck.output;
    if (error) {
      j["relative_error"] = *error;
      j["tolerance"] = tolerance;
      j["ok"] = ok;
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("moerun run --model %s\n", args.model.c_str());
    std::printf("  layer      %d (%s, routed experts only)\n", layer,
                std::string(io::model_type_name(checkpoint.config().family)).c_str());
    std::printf("  config     %s\n", describe(config).c_str());
    std::printf("  load       %.3f s: %.1f MB mapped, %.1f MB copied, %.1f MB converted\n",
                stats.seconds, static_cast<double>(stats.mapped_bytes) * 1e-6,
                static_cast<double>(stats.copied_bytes) * 1e-6,
                static_cast<double>(stats.converted_bytes) * 1e-6);
    for (const auto& note : loaded.notes) std::printf("             %s\n", note.c_str());
    std::printf("  tokens     %lld (%s)\n", static_cast<long long>(tokens),
                ck.input.empty() ? "random" : ck.input.c_str());
    std::printf("  backend    %s, layout %s\n", std::string(backend_name(backend)).c_str(),
                std::string(layout_name(layout)).c_str());
    std::printf("  time       %.3f ms (median of %d)\n", time_s * 1e3, args.repeat);
    if (!ck.output.empty()) std::printf("  output     %s\n", ck.output.c_str());
    if (error) {
      std::printf("  error      %.3e relative to the fp64 dense reference (tolerance %.1e): %s\n",
                  *error, tolerance, ok ? "ok" : "ABOVE TOLERANCE");
    }
  }
  return ok ? 0 : 1;
}

}  // namespace moerun::tools
